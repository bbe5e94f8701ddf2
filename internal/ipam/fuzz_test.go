package ipam

import (
	"net/netip"
	"testing"

	"github.com/calico-go/calico/internal/datastore"
)

// FuzzDecodeBlock feeds arbitrary block records to IPAM's decoder. It must
// never panic, and a block it accepts must be self-consistent: every
// allocation maps to an address inside the block and back, a free ordinal
// chosen for assignment is really free, and the consistency check over a
// datastore holding it does not panic.
func FuzzDecodeBlock(f *testing.F) {
	f.Add("192.168.0.0-26", []byte(`{"cidr":"192.168.0.0/26","affinity":"h1","allocations":{"1":"h1~w1","63":"x"}}`))
	f.Add("fd00::-122", []byte(`{"cidr":"fd00::/122","affinity":"","allocations":{}}`))
	f.Add("10.0.0.0-8", []byte(`{"cidr":"10.0.0.0/8"}`))
	f.Add("10.0.0.0-26", []byte(`{"cidr":"10.0.0.0/26","allocations":{"-1":"a","64":"b","3":""}}`))
	f.Add("x", []byte(`null`))
	f.Add("10.0.0.0-32", []byte(`{"cidr":"10.0.0.0/32","allocations":{"0":"a"}}`))
	pool := parsePool(datastore.PoolKey("192.168.0.0/16"), []byte(`{"cidr":"192.168.0.0/16"}`), 1)
	f.Fuzz(func(t *testing.T, keyTail string, value []byte) {
		key := datastore.PrefixBlocks + keyTail
		sb := parseBlockKV(key, value, 7)
		if (sb.st == nil) == (sb.err == nil) {
			t.Fatalf("decode gave st=%v err=%v", sb.st, sb.err)
		}
		if sb.st != nil {
			st := sb.st
			if host := st.prefix.Addr().BitLen() - st.prefix.Bits(); st.size != 1<<host || host > maxBlockHostBits {
				t.Fatalf("block %s has size %d", st.prefix, st.size)
			}
			for _, ord := range sortedOrdinals(st) {
				a := st.addr(ord)
				if back, ok := st.ordinal(a); !ok || back != ord || !st.prefix.Contains(a) {
					t.Fatalf("ordinal %d -> %s -> %d (%v)", ord, a, back, ok)
				}
			}
			if ord := freeIn(pool, st); ord >= 0 {
				if _, taken := st.owner(ord); taken || ord >= st.size {
					t.Fatalf("freeIn chose ordinal %d, which is taken or outside the block", ord)
				}
			}
		}
		checkSnapshot(snapshot{
			pools:   []poolInfo{pool},
			blocks:  []storedBlock{sb},
			handles: []storedHandle{parseHandleKV(datastore.HandleKey("h1~w1"), value, 3)},
			claims:  []claim{parseClaimKV(datastore.AffinityKey("h1", keyTail), value, 4)},
		}, map[string]bool{"h1~w1": true})
	})
}

// FuzzParsePool feeds arbitrary pool records to IPAM. It must never panic,
// and an accepted pool must have a sane block size and hand out blocks that
// lie inside it.
func FuzzParsePool(f *testing.F) {
	f.Add([]byte(`{"cidr":"192.168.0.0/16","blockSize":26}`), uint64(3))
	f.Add([]byte(`{"cidr":"fd00::/48"}`), uint64(1<<40))
	f.Add([]byte(`{"cidr":"10.0.0.0/30","blockSize":32}`), uint64(0))
	f.Add([]byte(`{"cidr":"10.0.0.0/8","blockSize":8}`), uint64(0))
	f.Add([]byte(`{"cidr":"::/0","blockSize":128}`), uint64(99))
	f.Fuzz(func(t *testing.T, value []byte, seed uint64) {
		p := parsePool(datastore.PrefixPools+"x", value, 1)
		if p.err != nil {
			if _, ok := chooseFreeBlock(p, nil, seed); ok {
				t.Fatal("an unusable pool gave a block")
			}
			return
		}
		bl := p.prefix.Addr().BitLen()
		if p.blockBits < p.prefix.Bits() || p.blockBits > bl || bl-p.blockBits > maxBlockHostBits {
			t.Fatalf("pool %s: block bits %d", p.prefix, p.blockBits)
		}
		b, ok := chooseFreeBlock(p, []netip.Prefix{p.blockFor(p.prefix.Addr())}, seed)
		if ok && (!p.containsBlock(b) || b.Bits() != p.blockBits || b.Masked() != b) {
			t.Fatalf("pool %s gave block %s", p.prefix, b)
		}
	})
}
