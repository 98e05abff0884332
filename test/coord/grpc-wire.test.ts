import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { etcdProto, memberId, u64Bits } from "../../src/coord/etcd-wire.ts";

describe("reply headers on the wire", () => {
  const PutResponse = etcdProto().KV.service.Put;
  it("a uint64 id given as bits encodes to the decimal id it came from", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.string(), (id, name) => {
        for (const dec of [id.toString(), memberId(name)]) {
          const header = { cluster_id: u64Bits(dec), member_id: u64Bits(dec), revision: 7, raft_term: 3 };
          const bytes = PutResponse.responseSerialize({ header });
          const back = PutResponse.responseDeserialize(bytes);
          expect(back.header).toEqual({ cluster_id: dec, member_id: dec, revision: "7", raft_term: "3" });
        }
      }),
      { numRuns: 300 },
    );
  });
});
