package ipam

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// bitmap marks which ordinals of a block are taken. Blocks hold at most
// 1<<maxBlockHostBits addresses, so a slice of words is small and a free
// ordinal is found a word (64 addresses) at a time instead of address by address.
type bitmap []uint64

func newBitmap(n int) bitmap { return make(bitmap, (n+63)/64) }

func (b bitmap) set(i int)      { b[i>>6] |= 1 << uint(i&63) }
func (b bitmap) has(i int) bool { return b[i>>6]&(1<<uint(i&63)) != 0 }

// count is the number of taken ordinals.
func (b bitmap) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// firstFree returns the lowest ordinal below n that is not taken, or -1.
// skipFirst and skipLast treat ordinal 0 and n-1 as taken without storing
// them: they are the pool's network and broadcast addresses, which we keep
// out of automatic assignment but never record as allocations.
func (b bitmap) firstFree(n int, skipFirst, skipLast bool) int {
	lastWord := (n - 1) >> 6
	for w := 0; w <= lastWord && w < len(b); w++ {
		word := b[w]
		if w == 0 && skipFirst {
			word |= 1
		}
		if w == lastWord {
			if skipLast {
				word |= 1 << uint((n-1)&63)
			}
			if n&63 != 0 {
				// Bits at or past n do not exist; count them as taken.
				word |= ^uint64(0) << uint(n&63)
			}
		}
		if word != ^uint64(0) {
			return w*64 + bits.TrailingZeros64(^word)
		}
	}
	return -1
}

// u128 is an address as a 128-bit number, so block and ordinal arithmetic is
// the same code for IPv4 (in the low word) and IPv6.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func fromU128(v u128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

func (u u128) add(v u128) u128 {
	lo, carry := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, carry)
	return u128{hi, lo}
}

func (u u128) sub(v u128) u128 {
	lo, borrow := bits.Sub64(u.lo, v.lo, 0)
	hi, _ := bits.Sub64(u.hi, v.hi, borrow)
	return u128{hi, lo}
}

func (u u128) or(v u128) u128 { return u128{u.hi | v.hi, u.lo | v.lo} }

func (u u128) cmp(v u128) int {
	switch {
	case u.hi < v.hi:
		return -1
	case u.hi > v.hi:
		return 1
	case u.lo < v.lo:
		return -1
	case u.lo > v.lo:
		return 1
	}
	return 0
}

// shl returns n << s as a 128-bit number (s < 128).
func shl(n uint64, s uint) u128 {
	switch {
	case s == 0:
		return u128{0, n}
	case s >= 64:
		return u128{n << (s - 64), 0}
	}
	return u128{n >> (64 - s), n << s}
}

// lowOnes returns a number with the low h bits set (h <= 128).
func lowOnes(h int) u128 {
	switch {
	case h >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case h >= 64:
		return u128{1<<uint(h-64) - 1, ^uint64(0)}
	}
	return u128{0, 1<<uint(h) - 1}
}

// prefixRange returns the first and last address of p as numbers.
func prefixRange(p netip.Prefix) (first, last u128) {
	first = toU128(p.Masked().Addr())
	return first, first.or(lowOnes(p.Addr().BitLen() - p.Bits()))
}
