import { lstatSync } from "node:fs";

/**
 * Whether `path` may be trusted with code we run or load (we may run as root): not a symbolic link
 * (links are not followed, so one planted where a file would be is refused), owned by us — or by
 * root, when `rootToo` (files an administrator installed) — and writable by no one else.
 */
export function ownedPrivate(path: string, options: { rootToo?: boolean } = {}): boolean {
  const uid = process.getuid?.();
  const st = lstatSync(path);
  const owner = st.uid === uid || (options.rootToo === true && st.uid === 0);
  return !st.isSymbolicLink() && owner && (st.mode & 0o022) === 0;
}
