package nft

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// TestApplyChangeIsApply: label changes applied by calc.Relabel and
// ApplyChange leave the table exactly as a full Apply of the same policy
// writes it, in our record and in the (fake) kernel, and send only the
// changed objects. Endpoints move between selectors, into and out of
// having any policy (apps a40-a49 have none: the profile stage and the
// pass-in entry come and go).
func TestApplyChangeIsApply(t *testing.T) {
	s := calc.LabelPolicySnapshot(200, 40)
	res := calc.Compute(calc.Input{Node: "h0", Snap: s})
	e, f := newFakeEnforcer()
	if _, err := e.Apply(res.Dataplane.Policy); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(14, 6))
	partial, endpoints := 0, 0
	for step := range 120 {
		k := rng.IntN(200)
		key := fmt.Sprintf("h0/w%d", k)
		old := s.Endpoints[key]
		calc.LabelPolicyRelabel(s, k, rng.IntN(50))
		next, ch, ok := calc.Relabel(s, "h0", res, key, old)
		if !ok {
			next = calc.Compute(calc.Input{Node: "h0", Snap: s})
			if _, err := e.Apply(next.Dataplane.Policy); err != nil {
				t.Fatal(err)
			}
			res = next
			continue
		}
		samePlans(t, step, e.cur, next.Dataplane.Policy, ch)
		st, err := e.ApplyChange(next.Dataplane.Policy, ch)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		res = next
		partial++
		if len(ch.Endpoints) > 0 {
			endpoints++
		}
		// An endpoint that label policies now apply to leaves its profile
		// list's chains for its own: an entry in from-wl, to-wl and a pass
		// map each, and a selector's.
		if st.Full || st.ElementsAdded > 1+3*len(ch.Endpoints) || st.ChainsWritten > 3*len(ch.Endpoints) {
			t.Errorf("step %d (%+v): %+v, more than the change", step, ch, st)
		}
		want := render(res.Dataplane.Policy)
		want.access = e.access
		if !reflect.DeepEqual(e.cur, want) {
			t.Fatalf("step %d: the Enforcer's record differs from the rendered policy", step)
		}
		if step%10 != 0 {
			continue // the kernel's side is checked every 10th step: a full Apply each is slow
		}
		full, ff := newFakeEnforcer()
		if _, err := full.Apply(res.Dataplane.Policy); err != nil {
			t.Fatal(err)
		}
		if got, want := fakeState(t, f), fakeState(t, ff); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: the table differs from a full Apply's", step)
		}
	}
	t.Logf("%d partial updates, %d with an endpoint chain", partial, endpoints)
	if partial < 80 || endpoints < 50 {
		t.Errorf("only %d partial updates, %d with an endpoint chain", partial, endpoints)
	}
}

// TestApplyChangeNeedsApply: before any Apply, after Resync, and for a
// selector the last policy did not have, ApplyChange declines and leaves
// the table alone.
func TestApplyChangeNeedsApply(t *testing.T) {
	s := calc.LabelPolicySnapshot(100, 20)
	p := calc.Compute(calc.Input{Node: "h0", Snap: s}).Dataplane.Policy
	e, f := newFakeEnforcer()
	if _, err := e.ApplyChange(p, calc.PolicyChange{}); !errors.Is(err, ErrNeedApply) {
		t.Errorf("before any Apply: %v", err)
	}
	if _, err := e.Apply(p); err != nil {
		t.Fatal(err)
	}
	before := fakeState(t, f)
	if _, err := e.ApplyChange(p, calc.PolicyChange{Selectors: []string{`app == "nope"`}}); !errors.Is(err, ErrNeedApply) {
		t.Errorf("an unknown selector: %v", err)
	}
	if _, err := e.ApplyChange(p, calc.PolicyChange{Endpoints: []string{"cali-nope"}}); !errors.Is(err, ErrNeedApply) {
		t.Errorf("an unknown endpoint: %v", err)
	}
	// A known endpoint before an unknown one: ApplyChange edits our record
	// in place, and a declined change must leave it whole (Apply plans
	// from it next).
	record := cloneRuleset(e.cur)
	if _, err := e.ApplyChange(p, calc.PolicyChange{Endpoints: []string{p.Endpoints[0].Interface, "cali-nope"}}); !errors.Is(err, ErrNeedApply) {
		t.Errorf("a known and an unknown endpoint: %v", err)
	}
	if !reflect.DeepEqual(e.cur, record) {
		t.Error("a declined change edited the Enforcer's record")
	}
	e.Resync()
	if _, err := e.ApplyChange(p, calc.PolicyChange{}); !errors.Is(err, ErrNeedApply) {
		t.Errorf("after Resync: %v", err)
	}
	if !reflect.DeepEqual(fakeState(t, f), before) {
		t.Error("a declined change touched the table")
	}
}

// labelChangeAtScale is one label change at the scale (1000
// endpoints, 200 policies, 50 selectors) as calc.Relabel gives it: the
// policy before and after, and what changed.
func labelChangeAtScale(b *testing.B) (prev, next calc.Policy, ch calc.PolicyChange) {
	s := calc.LabelPolicySnapshot(1000, 200)
	res := calc.Compute(calc.Input{Node: "h0", Snap: s})
	old := s.Endpoints["h0/w7"]
	calc.LabelPolicyRelabel(s, 7, 8)
	after, ch, ok := calc.Relabel(s, "h0", res, "h0/w7", old)
	if !ok || len(ch.Endpoints) != 1 || len(ch.Selectors) != 2 {
		b.Fatalf("relabel: %+v %v", ch, ok)
	}
	return res.Dataplane.Policy, after.Dataplane.Policy, ch
}

// BenchmarkLabelChangeApply is the CPU side of a label change through
// Apply: render the whole policy, diff, plan (nft not run).
func BenchmarkLabelChangeApply(b *testing.B) {
	prev, next, _ := labelChangeAtScale(b)
	cur := render(prev)
	f := knftables.NewFake(knftables.InetFamily, TableName)
	b.ReportAllocs()
	for b.Loop() {
		planIncremental(f.NewTransaction(), cur, render(next))
	}
}

// BenchmarkLabelChangeApplyChange is the same through ApplyChange: render
// the changed endpoint and selectors, diff, plan.
func BenchmarkLabelChangeApplyChange(b *testing.B) {
	prev, next, ch := labelChangeAtScale(b)
	cur := render(prev)
	f := knftables.NewFake(knftables.InetFamily, TableName)
	b.ReportAllocs()
	for b.Loop() {
		rs, t, err := cur.withChange(next, ch)
		if err != nil {
			b.Fatal(err)
		}
		planChange(f.NewTransaction(), cur, rs, t)
	}
}

// TestApplyChangeEndpoints: containers starting and stopping, applied by
// calc.Reendpoint and ApplyChange, leave the table exactly as a full Apply
// of the same policy writes it, in our record and in the (fake) kernel:
// the endpoint's chains and dispatch entries come and go, its addresses
// join and leave the anti-spoofing, tag and selector sets.
func TestApplyChangeEndpoints(t *testing.T) {
	s := calc.LabelPolicySnapshot(200, 40)
	for cidr, b := range s.Blocks {
		b.Affinity = "h0"
		s.Blocks[cidr] = b
	}
	in := calc.Input{Node: "h0", Snap: s}
	res := calc.Compute(in)
	e, f := newFakeEnforcer()
	if _, err := e.Apply(res.Dataplane.Policy); err != nil {
		t.Fatal(err)
	}
	present := map[int]bool{}
	for i := range 200 {
		present[i] = true
	}
	rng := rand.New(rand.NewPCG(19, 4))
	partial := 0
	for step := range 100 {
		i := rng.IntN(250) // 200-249: in the last block, not there yet
		var eps []calc.EndpointEdit
		var blocks []calc.BlockEdit
		if present[i] {
			eps, blocks = calc.LabelPolicyRemove(s, i)
		} else {
			eps, blocks = calc.LabelPolicyAdd(s, i, rng.IntN(40)) // apps every policy uses already
		}
		present[i] = !present[i]
		next, ch, ok := calc.Reendpoint(in, res, eps, blocks)
		if !ok {
			// A policy whose last endpoint went, or came back.
			res = calc.Compute(in)
			if _, err := e.Apply(res.Dataplane.Policy); err != nil {
				t.Fatal(err)
			}
			continue
		}
		samePlans(t, step, e.cur, next.Dataplane.Policy, ch.Policy)
		st, err := e.ApplyChange(next.Dataplane.Policy, ch.Policy)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		res = next
		partial++
		if st.Full || st.ChainsWritten > 4 {
			t.Errorf("step %d (%+v): %+v, more than the change", step, ch.Policy, st)
		}
		want := render(res.Dataplane.Policy)
		want.access = e.access
		if !reflect.DeepEqual(e.cur, want) {
			t.Fatalf("step %d: the Enforcer's record differs from the rendered policy", step)
		}
		if step%10 != 0 {
			continue
		}
		full, ff := newFakeEnforcer()
		if _, err := full.Apply(res.Dataplane.Policy); err != nil {
			t.Fatal(err)
		}
		if got, want := fakeState(t, f), fakeState(t, ff); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: the table differs from a full Apply's", step)
		}
	}
	t.Logf("%d of 100 changes partial", partial)
	if partial < 70 {
		t.Errorf("only %d of 100 changes partial", partial)
	}
	if want := calc.Compute(in).Dataplane.Policy; !reflect.DeepEqual(res.Dataplane.Policy, want) {
		t.Fatal("after the run, the policy differs from Compute's")
	}
}

// BenchmarkOneMoreEndpointApplyChange is the CPU side of one more
// endpoint next to 1000 through ApplyChange (calc.Reendpoint's change):
// render the endpoint, its tag's sets, diff, plan (nft not run). Compare
// BenchmarkRenderAndPlanOneMore1000, the same through Apply.
func BenchmarkOneMoreEndpointApplyChange(b *testing.B) {
	s := calc.LabelPolicySnapshot(1000, 200)
	for cidr, bl := range s.Blocks {
		bl.Affinity = "h0"
		s.Blocks[cidr] = bl
	}
	in := calc.Input{Node: "h0", Snap: s}
	prev := calc.Compute(in)
	eps, blocks := calc.LabelPolicyAdd(s, 1000, 7)
	next, ch, ok := calc.Reendpoint(in, prev, eps, blocks)
	if !ok {
		b.Fatal("Reendpoint declined")
	}
	cur := render(prev.Dataplane.Policy)
	f := knftables.NewFake(knftables.InetFamily, TableName)
	b.ReportAllocs()
	for b.Loop() {
		rs, t, err := cur.withChange(next.Dataplane.Policy, ch.Policy)
		if err != nil {
			b.Fatal(err)
		}
		planChange(f.NewTransaction(), cur, rs, t)
	}
}

// samePlans holds planChange to planIncremental: for the ruleset
// withChange derives from cur, both queue the same operations in the same
// order (the walk over every chain and dispatch entry is what planChange
// leaves out, not any operation).
func samePlans(t *testing.T, step int, cur *ruleset, p calc.Policy, ch calc.PolicyChange) {
	t.Helper()
	next, touched, err := cur.withChange(p, ch)
	if errors.Is(err, ErrNeedApply) {
		return
	}
	if err != nil {
		t.Fatalf("step %d: %v", step, err)
	}
	f := knftables.NewFake(knftables.InetFamily, TableName)
	whole, part := f.NewTransaction(), f.NewTransaction()
	stWhole, stPart := planIncremental(whole, cur, next), planChange(part, cur, next, touched)
	if whole.String() != part.String() || !reflect.DeepEqual(stWhole, stPart) {
		t.Fatalf("step %d: planChange differs from planIncremental:\n%s\nagainst\n%s", step, part, whole)
	}
	// The same change made in place (ApplyChange's way), to a copy of cur:
	// the same next, and planChange over the view of the previous
	// ruleset it gives plans the same operations.
	cp := cloneRuleset(cur)
	prevView, inPlace, touched2, err := cp.change(p, ch, true)
	if err != nil {
		t.Fatalf("step %d: in place: %v", step, err)
	}
	if !reflect.DeepEqual(inPlace, next) || !reflect.DeepEqual(touched2, touched) {
		t.Fatalf("step %d: the change made in place differs from withChange's", step)
	}
	viewed := f.NewTransaction()
	if stView := planChange(viewed, prevView, inPlace, touched2); viewed.String() != whole.String() || !reflect.DeepEqual(stView, stWhole) {
		t.Fatalf("step %d: planChange over the in-place view differs from planIncremental:\n%s\nagainst\n%s", step, viewed, whole)
	}
}

// cloneRuleset copies rs's maps (their values are never modified in place).
func cloneRuleset(rs *ruleset) *ruleset {
	c := *rs
	c.Chains, c.Sets = maps.Clone(rs.Chains), maps.Clone(rs.Sets)
	c.FromWl, c.ToWl = maps.Clone(rs.FromWl), maps.Clone(rs.ToWl)
	c.PassIn, c.PassOut = maps.Clone(rs.PassIn), maps.Clone(rs.PassOut)
	c.GrpFrom, c.GrpTo = maps.Clone(rs.GrpFrom), maps.Clone(rs.GrpTo)
	c.members, c.groups = maps.Clone(rs.members), maps.Clone(rs.groups)
	return &c
}

// BenchmarkPlanOneMoreEndpoint is ApplyChange's Go side for one more
// endpoint next to 10 and next to 1000 (withChange and the plan; nft not
// run), through planChange and, for comparison, planIncremental.
func BenchmarkPlanOneMoreEndpoint(b *testing.B) {
	for _, n := range []int{10, 1000} {
		s := calc.LabelPolicySnapshot(n, 20)
		for cidr, bl := range s.Blocks {
			bl.Affinity = "h0"
			s.Blocks[cidr] = bl
		}
		in := calc.Input{Node: "h0", Snap: s}
		prev := calc.Compute(in)
		eps, blocks := calc.LabelPolicyAdd(s, n, 7)
		next, ch, ok := calc.Reendpoint(in, prev, eps, blocks)
		if !ok {
			b.Fatal("Reendpoint declined")
		}
		cur := render(prev.Dataplane.Policy)
		f := knftables.NewFake(knftables.InetFamily, TableName)
		for _, planner := range []string{"planChange", "planIncremental"} {
			b.Run(fmt.Sprintf("%d/%s", n, planner), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					rs, t, err := cur.withChange(next.Dataplane.Policy, ch.Policy)
					if err != nil {
						b.Fatal(err)
					}
					if planner == "planChange" {
						planChange(f.NewTransaction(), cur, rs, t)
					} else {
						planIncremental(f.NewTransaction(), cur, rs)
					}
				}
			})
		}
	}
}

// BenchmarkAddRemoveEndpointChange is ApplyChange's Go side for one
// endpoint added and removed again (two changes per op; nft not run) next
// to 10 and 1000, the maps copied (withChange) against edited in place
// (ApplyChange's change): the copies' bytes grow with the endpoints.
func BenchmarkAddRemoveEndpointChange(b *testing.B) {
	for _, n := range []int{10, 1000} {
		s := calc.LabelPolicySnapshot(n, 20)
		for cidr, bl := range s.Blocks {
			bl.Affinity = "h0"
			s.Blocks[cidr] = bl
		}
		in := calc.Input{Node: "h0", Snap: s}
		prev := calc.Compute(in)
		eps, blocks := calc.LabelPolicyAdd(s, n, 7)
		next, ch, ok := calc.Reendpoint(in, prev, eps, blocks)
		if !ok {
			b.Fatal("Reendpoint declined")
		}
		f := knftables.NewFake(knftables.InetFamily, TableName)
		for _, inPlace := range []bool{false, true} {
			name := map[bool]string{false: "copied", true: "inPlace"}[inPlace]
			b.Run(fmt.Sprintf("%d/%s", n, name), func(b *testing.B) {
				cur := render(prev.Dataplane.Policy)
				b.ReportAllocs()
				for b.Loop() {
					for _, p := range []calc.Policy{next.Dataplane.Policy, prev.Dataplane.Policy} {
						old, rs, t, err := cur.change(p, ch.Policy, inPlace)
						if err != nil {
							b.Fatal(err)
						}
						planChange(f.NewTransaction(), old, rs, t)
						cur = rs
					}
				}
			})
		}
	}
}

// TestGroupCollisions: two profile lists with one device group (a 30-bit
// hash collision, made here by hand) are dispatched by name, never by the
// group, and a change that would make or end such a collision takes a
// full Apply, which decides it from the whole policy: an incremental one
// could leave one list's endpoints on the other's chains.
func TestGroupCollisions(t *testing.T) {
	const g = 0x40000007
	prof := func(name string) api.Profile {
		return api.Profile{Name: name, Outbound: []api.Rule{{Action: api.ActionAllow}}}
	}
	ep := func(iface, addr, profile string) calc.EndpointPolicy {
		return calc.EndpointPolicy{Interface: iface, Addrs: addrs(addr), Profiles: []string{profile}, Group: g}
	}
	base := calc.Policy{Profiles: map[string]api.Profile{"P": prof("P"), "Q": prof("Q")},
		Endpoints: []calc.EndpointPolicy{ep("calia", "10.65.0.1", "P"), ep("calib", "10.65.0.2", "P")}}
	rs := render(base)
	if len(rs.GrpFrom) != 1 || len(rs.FromWl) != 0 {
		t.Fatalf("one list: want dispatch by group only, got %v by group, %v by name", rs.GrpFrom, rs.FromWl)
	}

	// Another list with the same group: every endpoint of it by name.
	both := base
	both.Endpoints = append(slices.Clone(base.Endpoints), ep("calic", "10.65.0.3", "Q"))
	rs = render(both)
	if len(rs.GrpFrom) != 0 || len(rs.FromWl) != 3 || rs.Sets[setWlGroups].Elems != nil {
		t.Fatalf("collided: want all three by name, got %v by group, %v by name, wl-groups %v", rs.GrpFrom, rs.FromWl, rs.Sets[setWlGroups].Elems)
	}

	// Incrementally: making the collision, with or without label
	// policies on the newcomer, and ending it are declined.
	withPol := ep("calic", "10.65.0.3", "Q")
	withPol.IngressPolicies = []string{"pol"}
	polled := base
	polled.Policies = map[string]calc.TierPolicy{"pol": {}}
	polled.Endpoints = append(slices.Clone(base.Endpoints), withPol)
	for _, c := range []struct {
		what     string
		from, to calc.Policy
		iface    string
	}{
		{"a second list joins the group", base, both, "calic"},
		{"a second list with label policies joins the group", base, polled, "calic"},
		{"the second list leaves the group", both, base, "calic"},
		{"an endpoint of a collided group leaves", both, calc.Policy{Profiles: both.Profiles, Endpoints: both.Endpoints[1:]}, "calia"},
	} {
		e, _ := newFakeEnforcer()
		if _, err := e.Apply(c.from); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ApplyChange(c.to, calc.PolicyChange{Endpoints: []string{c.iface}}); !errors.Is(err, ErrNeedApply) {
			t.Errorf("%s: ApplyChange %v, want ErrNeedApply", c.what, err)
		}
	}
}
