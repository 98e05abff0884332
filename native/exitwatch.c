/*
 * exitwatch: tells the host agent the moment a watched process starts to die.
 *
 * Why: the kernel closes a killed process's sockets (the agent's usual evidence) only after it has
 * torn down the process's memory, several to tens of milliseconds for a Node process of 60-600 MB.
 * Linux's taskstats interface (a generic-netlink family) reports each task's exit at the start of
 * do_exit(), before that teardown: ~0.1 ms after SIGKILL instead of ~50 ms for 600 MB.
 *
 * Protocol (lines): stdin "+PID" watch, "-PID" unwatch. stdout "ready" once registered, then
 * "exit PID" when the thread group PID has died (every thread of it is exiting), "dying PID" when
 * one of its threads has started to exit (perhaps the whole group, perhaps one thread), "overrun"
 * when the kernel dropped events (the agent's socket evidence still covers them). On a setup failure
 * it prints "unavailable <why>" and exits with status 3. It exits when stdin closes.
 *
 * When is a thread group dead? A message about an exiting task carries a TGID record exactly when
 * that task was the group's last live thread (signal->live reached 0). A PID-only record for the
 * group leader means either a single-threaded process or a leader leaving before its threads;
 * threads leave /proc/PID/task only after their own exit, so if the directory then lists only the
 * leader, no thread of the group is live. The group's last thread may start its exit milliseconds
 * after the first (a Node process has a dozen threads to wake on two cores), so the first thread's
 * exit is passed on too ("dying", from the record's ac_tgid): a SIGKILL marks every thread before
 * waking any, so by then /proc already shows the whole group doomed. The agent checks /proc itself
 * before it reports anything (the process identity; every thread exiting or with SIGKILL pending),
 * so this program only has to be prompt, not final.
 *
 * Needs CAP_NET_ADMIN (root) for the listener registration; pids are those of the initial pid
 * namespace, which is why the agent and its processes must share it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/taskstats.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GENL_DATA(n) ((char *)NLMSG_DATA(n) + GENL_HDRLEN)
#define ATTR_DATA(a) ((char *)(a) + NLA_HDRLEN)
#define MAX_WATCHED 65536

static int watched[MAX_WATCHED];
static int nwatched;

static int is_watched(int pid) {
  for (int i = 0; i < nwatched; i++)
    if (watched[i] == pid) return 1;
  return 0;
}

static void watch(int pid) {
  if (pid <= 0 || is_watched(pid) || nwatched == MAX_WATCHED) return;
  watched[nwatched++] = pid;
}

static void unwatch(int pid) {
  for (int i = 0; i < nwatched; i++)
    if (watched[i] == pid) {
      watched[i] = watched[--nwatched];
      return;
    }
}

static void say(const char *line) {
  fputs(line, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

static void unavailable(const char *why, int err) {
  printf("unavailable %s%s%s\n", why, err ? ": " : "", err ? strerror(err) : "");
  fflush(stdout);
  exit(3);
}

static int send_genl(int fd, uint16_t type, uint8_t cmd, uint16_t attr, const void *data, int len) {
  struct {
    struct nlmsghdr n;
    struct genlmsghdr g;
    char buf[256];
  } m;
  memset(&m, 0, sizeof m);
  m.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
  m.n.nlmsg_type = type;
  m.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  m.n.nlmsg_seq = 1;
  m.g.cmd = cmd;
  m.g.version = 1;
  struct nlattr *a = (struct nlattr *)GENL_DATA(&m.n);
  a->nla_type = attr;
  a->nla_len = NLA_HDRLEN + len;
  memcpy(ATTR_DATA(a), data, len);
  m.n.nlmsg_len += NLA_ALIGN(a->nla_len);
  struct sockaddr_nl to = {.nl_family = AF_NETLINK};
  return sendto(fd, &m, m.n.nlmsg_len, 0, (struct sockaddr *)&to, sizeof to) < 0 ? -errno : 0;
}

/* Walk the attributes in [first, first + len): each well-formed one, never past the end. */
#define EACH_ATTR(a, first, len)                                                                    \
  for (struct nlattr *a = (struct nlattr *)(first); (len) >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && \
                                                    a->nla_len <= (len);                              \
       (len) -= NLA_ALIGN(a->nla_len), a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))
#define ATTR_TYPE(a) ((a)->nla_type & NLA_TYPE_MASK)
#define ATTR_LEN(a) ((a)->nla_len - NLA_HDRLEN)

/* One datagram from the kernel (never from another process), or -errno. */
static int recv_kernel(int fd, char *buf, int size, int flags) {
  for (;;) {
    struct sockaddr_nl from;
    socklen_t fromlen = sizeof from;
    int n = recvfrom(fd, buf, size, flags, (struct sockaddr *)&from, &fromlen);
    if (n < 0) return -errno;
    if (from.nl_pid == 0) return n;
  }
}

/* Read replies until the ack; returns the taskstats family id (for GETFAMILY) or 0, or -errno. */
static int await_reply(int fd, int want_family) {
  static char buf[8192];
  int family = 0;
  for (;;) {
    int n = recv_kernel(fd, buf, sizeof buf, 0);
    if (n == -ENOBUFS) continue; /* exit records overflowed the buffer meanwhile: not our answer */
    if (n < 0) return n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; n > 0 && NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EPROTO;
        int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
        if (err != 0) return err;
        return family;
      }
      if (!want_family || h->nlmsg_type != GENL_ID_CTRL) continue;
      int len = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
      EACH_ATTR(a, GENL_DATA(h), len) {
        if (ATTR_TYPE(a) == CTRL_ATTR_FAMILY_ID && ATTR_LEN(a) >= 2) family = *(uint16_t *)ATTR_DATA(a);
      }
    }
  }
}

/* Whether this process is in the initial pid namespace (taskstats speaks its pids). */
static int in_initial_pid_ns(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  int ok = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "NSpid:", 6) != 0) continue;
    int fields = 0;
    for (char *t = strtok(line + 6, " \t\n"); t; t = strtok(NULL, " \t\n")) fields++;
    ok = fields == 1;
    break;
  }
  fclose(f);
  return ok;
}

/* Whether /proc/PID/task lists no thread but the leader (or is gone). */
static int only_leader_left(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *d = opendir(path);
  if (!d) return errno == ENOENT || errno == ESRCH;
  int others = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (atoi(e->d_name) != pid) others++;
  }
  closedir(d);
  return others == 0;
}

/* An exit record's task id, its group's id when it was the group's last thread (else 0), and its
 * group's id from the stats (ac_tgid, else 0). */
static void parse_record(struct nlmsghdr *h, int *pid_out, int *tgid_out, int *owner_out) {
  *pid_out = *tgid_out = *owner_out = 0;
  if (h->nlmsg_len < NLMSG_LENGTH(GENL_HDRLEN)) return;
  int len = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
  int pid = 0, tgid = 0, owner = 0;
  EACH_ATTR(a, GENL_DATA(h), len) {
    int type = ATTR_TYPE(a);
    if (type != TASKSTATS_TYPE_AGGR_PID && type != TASKSTATS_TYPE_AGGR_TGID) continue;
    /* Nested: the id, then the stats. */
    int inner = ATTR_LEN(a);
    EACH_ATTR(in, ATTR_DATA(a), inner) {
      int itype = ATTR_TYPE(in);
      if (itype == TASKSTATS_TYPE_PID && ATTR_LEN(in) >= 4) pid = *(int *)ATTR_DATA(in);
      if (itype == TASKSTATS_TYPE_TGID && ATTR_LEN(in) >= 4) tgid = *(int *)ATTR_DATA(in);
      if (itype == TASKSTATS_TYPE_STATS && type == TASKSTATS_TYPE_AGGR_PID) {
        struct taskstats *ts = (struct taskstats *)ATTR_DATA(in);
        /* ac_tgid exists from taskstats version 12 (Linux 5.19). */
        if (ATTR_LEN(in) >= (int)(offsetof(struct taskstats, ac_tgid) + sizeof ts->ac_tgid) && ts->version >= 12)
          owner = (int)ts->ac_tgid;
      }
    }
  }
  *pid_out = pid;
  *tgid_out = tgid;
  *owner_out = owner;
}

static void on_exit_message(struct nlmsghdr *h) {
  int pid, tgid, owner;
  parse_record(h, &pid, &tgid, &owner);
  /* The agent says when to stop watching ("-PID"): it may not believe a notice (see above). */
  int dead = 0;
  if (tgid > 0 && is_watched(tgid)) dead = tgid;
  else if (tgid == 0 && pid > 0 && is_watched(pid) && only_leader_left(pid)) dead = pid;
  if (dead) {
    printf("exit %d\n", dead);
  } else if (owner > 0 && is_watched(owner)) {
    printf("dying %d\n", owner);
  } else {
    return;
  }
  fflush(stdout);
}

static void on_command(char *line) {
  int pid = atoi(line + 1);
  if (line[0] == '+') watch(pid);
  else if (line[0] == '-') unwatch(pid);
}

/*
 * taskstats delivers exit records only to listeners in the initial network namespace (it sends
 * them with genlmsg_unicast(&init_net, ...)), though a listener elsewhere registers without error.
 * An agent in another network namespace (a container's, a test lab's host) joins the initial one
 * for this socket alone, which needs CAP_SYS_ADMIN; NULL when done, else why not. The initial
 * namespace is kthreadd's (pid 2 in the initial pid namespace, which main() has checked): kernel
 * threads live in it, and pid 1 may be out of reach (a sandbox's init).
 */
static const char *join_initial_netns(void) {
  char comm[32] = {0};
  FILE *f = fopen("/proc/2/comm", "r");
  if (!f || !fgets(comm, sizeof comm, f) || strncmp(comm, "kthreadd", 8) != 0) {
    if (f) fclose(f);
    return "cannot find the initial network namespace (pid 2 is not kthreadd)";
  }
  fclose(f);
  struct stat self, init;
  if (stat("/proc/self/ns/net", &self) < 0 || stat("/proc/2/ns/net", &init) < 0)
    return "cannot compare this network namespace with the initial one";
  if (self.st_ino == init.st_ino && self.st_dev == init.st_dev) return NULL;
  int ns = open("/proc/2/ns/net", O_RDONLY | O_CLOEXEC);
  if (ns < 0) return "not in the initial network namespace, and cannot open it";
  int rc = setns(ns, CLONE_NEWNET);
  close(ns);
  return rc < 0 ? "not in the initial network namespace, and cannot join it (needs CAP_SYS_ADMIN)" : NULL;
}

/* Whether an exit record reaches this listener: a child of ours exits and its record must come. */
static int records_arrive(int fd, int family) {
  pid_t child = fork();
  if (child < 0) return 0;
  if (child == 0) _exit(0);
  static char buf[65536];
  int seen = 0;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  /* Other processes' records may come first on a busy host: read for up to 5 s, not a count. */
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (seen || now.tv_sec - start.tv_sec >= 5) break;
    int n = recv_kernel(fd, buf, sizeof buf, 0); /* SO_RCVTIMEO bounds each wait */
    if (n == -ENOBUFS || n == -EINTR) continue;
    if (n < 0) break;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; n > 0 && NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type != family) continue;
      int pid, tgid, owner;
      parse_record(h, &pid, &tgid, &owner);
      if (pid == child) seen = 1;
    }
  }
  waitpid(child, NULL, 0);
  return seen;
}

int main(void) {
  if (!in_initial_pid_ns()) unavailable("not in the initial pid namespace (taskstats reports its pids)", 0);
  const char *why = join_initial_netns();
  if (why) unavailable(why, 0);
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  if (fd < 0) unavailable("no generic netlink socket", errno);
  int size = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  struct sockaddr_nl self = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&self, sizeof self) < 0) unavailable("bind", errno);
  struct timeval setup_timeout = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &setup_timeout, sizeof setup_timeout);

  int rc = send_genl(fd, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, TASKSTATS_GENL_NAME,
                     strlen(TASKSTATS_GENL_NAME) + 1);
  int family = rc < 0 ? rc : await_reply(fd, 1);
  if (family <= 0) unavailable("the kernel has no taskstats (CONFIG_TASKSTATS)", family < 0 ? -family : 0);

  char mask[32];
  long cpus = sysconf(_SC_NPROCESSORS_CONF);
  snprintf(mask, sizeof mask, "0-%ld", cpus > 0 ? cpus - 1 : 0);
  rc = send_genl(fd, family, TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, mask, strlen(mask) + 1);
  if (rc == 0) rc = await_reply(fd, 0);
  if (rc < 0) unavailable("taskstats listener registration (needs CAP_NET_ADMIN)", -rc);
  if (!records_arrive(fd, family)) unavailable("registered, but no exit record arrived for a test child", 0);
  struct timeval no_timeout = {0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &no_timeout, sizeof no_timeout);
  say("ready");

  static char buf[65536];
  static char cmd[256];
  int cmdlen = 0;
  struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[0].revents & (POLLNVAL)) return 1;
    if (fds[0].revents & (POLLIN | POLLERR)) {
      int n = recv_kernel(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n == -ENOBUFS) say("overrun");
      for (struct nlmsghdr *h = (struct nlmsghdr *)buf; n > 0 && NLMSG_OK(h, n); h = NLMSG_NEXT(h, n))
        if (h->nlmsg_type == family) on_exit_message(h);
    }
    if (fds[1].revents & POLLNVAL) break;
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      char in[4096];
      int n = read(0, in, sizeof in);
      if (n <= 0) break; /* the agent is gone */
      for (int i = 0; i < n; i++) {
        if (in[i] == '\n') {
          cmd[cmdlen] = 0;
          on_command(cmd);
          cmdlen = 0;
        } else if (cmdlen < (int)sizeof cmd - 1) cmd[cmdlen++] = in[i];
      }
    }
  }
  send_genl(fd, family, TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, mask, strlen(mask) + 1);
  return 0;
}
