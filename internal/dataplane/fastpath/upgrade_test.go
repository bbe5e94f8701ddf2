package fastpath

import (
	"testing"

	"github.com/cilium/ebpf"
)

// TestLoadKeepsFittingMaps: an agent upgraded across a change of one map's
// shape (fp_stats gained a counter slot) takes over the predecessor's
// maps that still fit. Before, one misfit dropped them all, fp_config
// with them, and the operator's nf_conntrack_tcp_be_liberal saved there
// was lost: teardown could no longer put it back.
func TestLoadKeepsFittingMaps(t *testing.T) {
	spec, err := loadFastpath()
	if err != nil {
		t.Fatal(err)
	}
	config, err := ebpf.NewMap(spec.Maps["fp_config"])
	if err != nil {
		t.Fatal(err)
	}
	defer config.Close()
	const saved = 0 + 1 // the operator had 0; stored plus one
	if err := config.Put(configSavedLiberal, uint32(saved)); err != nil {
		t.Fatal(err)
	}
	// The predecessor's fp_stats, one slot short of this build's.
	old := spec.Maps["fp_stats"].Copy()
	old.MaxEntries--
	stats, err := ebpf.NewMap(old)
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()

	objs, err := load(map[string]*ebpf.Map{"fp_config": config, "fp_stats": stats})
	if err != nil {
		t.Fatalf("load with a misfit map: %v", err)
	}
	defer objs.Close()
	if got := savedLiberal(objs); got != saved {
		t.Errorf("saved be_liberal after the upgrade = %d, want %d (the predecessor's fp_config was not taken over)", got, saved)
	}
	info, err := objs.FpStats.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxEntries != spec.Maps["fp_stats"].MaxEntries {
		t.Errorf("fp_stats has %d slots, want this build's %d", info.MaxEntries, spec.Maps["fp_stats"].MaxEntries)
	}
}
