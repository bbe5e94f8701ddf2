// Package tcx holds what every owner of eBPF programs on tc hooks does
// alike (internal/dataplane/ipip, internal/dataplane/fastpath): find our
// programs by name, put one in place of its predecessor in one step, take
// them off, reuse a predecessor's maps across an agent restart, and keep a
// map equal to a desired set. Programs go on tcx, or, on interfaces that
// come and go with workloads, as cls_bpf filters (cls.go says why). Each owner still decides what it attaches
// where; this package owns no kernel object.
package tcx

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Attached lists the programs called name attached at (ifindex, typ).
func Attached(ifindex int, typ ebpf.AttachType, name string) ([]ebpf.ProgramID, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: typ})
	if err != nil {
		return nil, err
	}
	var out []ebpf.ProgramID
	for _, ap := range res.Programs {
		p, err := ebpf.NewProgramFromID(ap.ID)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && info.Name == name {
			out = append(out, ap.ID)
		}
	}
	return out, nil
}

// Attach makes prog the one program called name at (ifindex, typ):
// already there, it stays; a predecessor is replaced in one step, so no
// packet passes between the two; extra copies are detached. With none
// there, it goes at anchor (link.Head() or link.Tail()).
func Attach(ifindex int, typ ebpf.AttachType, name string, prog *ebpf.Program, anchor link.Anchor) error {
	info, err := prog.Info()
	if err != nil {
		return err
	}
	mine, _ := info.ID()
	ids, err := Attached(ifindex, typ, name)
	if err != nil {
		return err
	}
	placed := false
	for _, id := range ids {
		if id == mine && !placed {
			placed = true
			continue
		}
		old, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // detached meanwhile
		}
		if !placed {
			err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: ifindex, Program: prog, Attach: typ, Anchor: link.ReplaceProgram(old)})
			placed = err == nil
		} else {
			err = link.RawDetachProgram(link.RawDetachProgramOptions{Target: ifindex, Program: old, Attach: typ})
		}
		old.Close()
		if err != nil {
			return err
		}
	}
	if !placed {
		return link.RawAttachProgram(link.RawAttachProgramOptions{Target: ifindex, Program: prog, Attach: typ, Anchor: anchor})
	}
	return nil
}

// Detach removes every program called name at (ifindex, typ). No tcx on
// this kernel, or the interface gone, means nothing of ours is there.
func Detach(ifindex int, typ ebpf.AttachType, name string) error {
	ids, err := Attached(ifindex, typ, name)
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: ifindex, Program: p, Attach: typ}); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("detach %s: %w", name, err))
		}
		p.Close()
	}
	return errors.Join(errs...)
}

// ExistingMaps returns, by name, the maps called one of names that the
// program called prog at (ifindex, typ) uses: what an earlier agent left
// loaded, so that a restart keeps their contents. Nil when there is none.
func ExistingMaps(ifindex int, typ ebpf.AttachType, prog string, names ...string) map[string]*ebpf.Map {
	ids, err := Attached(ifindex, typ, prog)
	if err != nil || len(ids) == 0 {
		return nil
	}
	p, err := ebpf.NewProgramFromID(ids[0])
	if err != nil {
		return nil
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return nil
	}
	mapIDs, _ := info.MapIDs()
	out := map[string]*ebpf.Map{}
	for _, id := range mapIDs {
		mp, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		mi, err := mp.Info()
		if err != nil || !slices.Contains(names, mi.Name) {
			mp.Close()
			continue
		}
		out[mi.Name] = mp
	}
	return out
}

// SyncMap makes mp hold exactly want (with keepStale, it deletes nothing:
// entries the agent no longer wants stay until it says otherwise).
func SyncMap[K comparable, V comparable](mp *ebpf.Map, want map[K]V, keepStale bool) error {
	var k K
	var v V
	have := map[K]V{}
	it := mp.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read map %s: %w", mapName(mp), err)
	}
	return WriteDiff(mp, want, have, keepStale)
}

// WriteDiff makes mp, which holds have, hold want: it writes the entries
// that differ and, unless keepStale, deletes those want lacks. A caller
// that knows what the map holds (it wrote it last) skips SyncMap's read.
func WriteDiff[K comparable, V comparable](mp *ebpf.Map, want, have map[K]V, keepStale bool) error {
	var errs []error
	for k, v := range want {
		if hv, ok := have[k]; ok && hv == v {
			continue
		}
		if err := mp.Put(k, v); err != nil {
			errs = append(errs, fmt.Errorf("update map %s: %w", mapName(mp), err))
		}
	}
	if !keepStale {
		for k := range have {
			if _, ok := want[k]; !ok {
				if err := mp.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					errs = append(errs, fmt.Errorf("delete from map %s: %w", mapName(mp), err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func mapName(mp *ebpf.Map) string {
	if mi, err := mp.Info(); err == nil {
		return mi.Name
	}
	return "?"
}

// SumStats reads a per-CPU array of counters, index i named names[i],
// summed over CPUs.
func SumStats(mp *ebpf.Map, names []string) map[string]uint64 {
	out := map[string]uint64{}
	for i, name := range names {
		var per []uint64
		if err := mp.Lookup(uint32(i), &per); err != nil {
			continue
		}
		for _, v := range per {
			out[name] += v
		}
	}
	return out
}

// OneLine keeps the first line of an error (a verifier log runs to pages).
func OneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " (more in the agent's log)"
	}
	return s
}
