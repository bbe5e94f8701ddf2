package nft

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/calico-go/calico/internal/calc"
)

// genFake is a knftables.Fake with the kernel's ruleset generation: every
// committed transaction, ours or another writer's (commit), moves it by one.
type genFake struct {
	*knftables.Fake
	gen uint32
	// during runs inside our next transaction, after its commit: a writer
	// racing us.
	during func()
}

func (g *genFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	if err := g.Fake.Run(ctx, tx); err != nil {
		return err
	}
	g.gen = nextGeneration(g.gen)
	if g.during != nil {
		g.during()
		g.during = nil
	}
	return nil
}

// commit is another writer's transaction (of any table).
func (g *genFake) commit() { g.gen = nextGeneration(g.gen) }

func newGenEnforcer() (*Enforcer, *genFake) {
	g := &genFake{Fake: knftables.NewFake(knftables.InetFamily, TableName), gen: 41}
	e := newWith(g)
	e.gen = func() (uint32, error) { return g.gen, nil }
	return e, g
}

// TestResyncWithoutDriftWritesNothing: a Resync after which the ruleset
// generation is still the one our last write left runs no nft transaction;
// one after any other commit rewrites the table, whatever table that
// commit changed.
func TestResyncWithoutDriftWritesNothing(t *testing.T) {
	e, g := newGenEnforcer()
	p := samplePolicy()
	if st, err := e.Apply(p); err != nil || !st.Full {
		t.Fatalf("first Apply: %+v, %v", st, err)
	}
	// An incremental write keeps the record trusted.
	p.TagMembers["web.front"] = calc.AddrSet{V4: addrs("10.65.0.1", "10.65.9.9")}
	if st, err := e.Apply(p); err != nil || st.Full || st.Ops == 0 {
		t.Fatalf("incremental Apply: %+v, %v", st, err)
	}
	for i := range 3 {
		writes := e.Writes()
		e.Resync()
		st, err := e.Apply(p)
		if err != nil || st.Full || st.ResyncRewrite || st.Ops != 0 || e.Writes() != writes {
			t.Errorf("resync %d without drift: %+v, %v, %d nft transactions", i, st, err, e.Writes()-writes)
		}
	}

	// Somebody edits our table (or only another one: the generation
	// cannot tell, so ours is rewritten either way).
	for _, what := range []string{"our table", "another table"} {
		if what == "our table" {
			tx := g.NewTransaction()
			tx.Delete(&knftables.Table{})
			if err := g.Fake.Run(t.Context(), tx); err != nil {
				t.Fatal(err)
			}
		}
		g.commit()
		writes := e.Writes()
		e.Resync()
		st, err := e.Apply(p)
		if err != nil || !st.Full || !st.ResyncRewrite || e.Writes() != writes+1 {
			t.Errorf("resync after a commit to %s: %+v, %v", what, st, err)
		}
		if g.Table == nil || g.Table.Chains[chainFwdEgress] == nil {
			t.Errorf("after a commit to %s: table not restored", what)
		}
		// And the next resync, with nothing new, writes nothing again.
		e.Resync()
		if st, err := e.Apply(p); err != nil || st.Ops != 0 || e.Writes() != writes+1 {
			t.Errorf("resync after the repair: %+v, %v", st, err)
		}
	}
}

// TestResyncRacingWriter: another writer committing between our
// transaction and our reading of the generation after it (an attacker
// timing an edit to hide it behind ours) leaves the record untrusted, so
// the next resync rewrites; so does one committing between two of our
// writes.
func TestResyncRacingWriter(t *testing.T) {
	e, g := newGenEnforcer()
	p := samplePolicy()
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}
	want := fakeState(t, g.Fake)["chain "+chainSource]
	g.during = func() { // the anti-spoofing chain flushed, and committed
		g.Fake.Table.Chains[chainSource].Rules = nil
		g.commit()
	}
	p.TagMembers["web.front"] = calc.AddrSet{V4: addrs("10.65.0.1", "10.65.9.9")}
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}
	e.Resync()
	st, err := e.Apply(p)
	if err != nil || !st.ResyncRewrite {
		t.Errorf("resync after a racing commit: %+v, %v", st, err)
	}
	if got := fakeState(t, g.Fake)["chain "+chainSource]; !reflect.DeepEqual(got, want) || len(want) == 0 {
		t.Errorf("anti-spoofing chain not restored: %q, want %q", got, want)
	}

	// A commit between two of ours: the second starts from a state we
	// did not write, so it does not make the record trusted again.
	g.commit()
	p.TagMembers["web.front"] = calc.AddrSet{V4: addrs("10.65.0.1")}
	if st, err := e.Apply(p); err != nil || st.Full {
		t.Fatalf("incremental Apply: %+v, %v", st, err)
	}
	e.Resync()
	if st, err := e.Apply(p); err != nil || !st.ResyncRewrite {
		t.Errorf("resync after a commit between two of ours: %+v, %v", st, err)
	}
}

// TestResyncWithoutGeneration: an Enforcer that cannot read the
// generation (or gets an error) rewrites at every resync, as before.
func TestResyncWithoutGeneration(t *testing.T) {
	e, _ := newGenEnforcer()
	fail := errors.New("no netlink")
	e.gen = func() (uint32, error) { return 0, fail }
	p := samplePolicy()
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}
	e.Resync()
	if st, err := e.Apply(p); err != nil || !st.Full || !st.ResyncRewrite {
		t.Errorf("resync without a generation: %+v, %v", st, err)
	}
}

// TestApplyChangeAfterResync: a label change right after a Resync goes on
// incrementally when nothing drifted, and leaves it to Apply when
// something committed meanwhile.
func TestApplyChangeAfterResync(t *testing.T) {
	s := calc.LabelPolicySnapshot(100, 20)
	res := calc.Compute(calc.Input{Node: "h0", Snap: s})
	e, g := newGenEnforcer()
	if _, err := e.Apply(res.Dataplane.Policy); err != nil {
		t.Fatal(err)
	}
	key := "h0/w3"
	old := s.Endpoints[key]
	calc.LabelPolicyRelabel(s, 3, 7)
	next, ch, ok := calc.Relabel(s, "h0", res, key, old)
	if !ok {
		t.Fatal("Relabel declined")
	}
	before := fakeState(t, g.Fake)
	g.commit()
	e.Resync()
	if _, err := e.ApplyChange(next.Dataplane.Policy, ch); !errors.Is(err, ErrNeedApply) {
		t.Errorf("after Resync and another commit: %v", err)
	}
	if !reflect.DeepEqual(fakeState(t, g.Fake), before) {
		t.Error("a declined change touched the table")
	}
	if st, err := e.Apply(res.Dataplane.Policy); err != nil || !st.ResyncRewrite {
		t.Fatalf("Apply: %+v, %v", st, err)
	}
	e.Resync()
	st, err := e.ApplyChange(next.Dataplane.Policy, ch)
	if err != nil || st.Full || st.Ops == 0 {
		t.Errorf("label change after a resync without drift: %+v, %v", st, err)
	}
}
