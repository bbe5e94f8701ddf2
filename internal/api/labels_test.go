package api

import "testing"

func TestEffectiveLabels(t *testing.T) {
	ep := Endpoint{Node: "host1", Workload: "w1", Orchestrator: OrchestratorNetns,
		Profiles: []string{"web"},
		Labels:   map[string]string{"app": "db", LabelNode: "host2", ProfileLabelPrefix + "admin": ""}}
	got := ep.EffectiveLabels()
	want := map[string]string{"app": "db", LabelNode: "host1", LabelOrchestrator: "netns",
		LabelWorkload: "w1", ProfileLabelPrefix + "web": ""}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: got %q (%v), want %q", k, g, ok, v)
		}
	}
}

func TestEffectiveLabelsCNIPod(t *testing.T) {
	own := map[string]string{LabelNamespace: "prod", LabelPod: "web-1"}
	cni := Endpoint{Node: "h", Workload: "w", Orchestrator: OrchestratorCNI, Labels: own}.EffectiveLabels()
	if cni[LabelNamespace] != "prod" || cni[LabelPod] != "web-1" {
		t.Errorf("a CNI endpoint lost its pod labels: %v", cni)
	}
	other := Endpoint{Node: "h", Workload: "w", Orchestrator: OrchestratorNetns, Labels: own}.EffectiveLabels()
	if _, ok := other[LabelNamespace]; ok {
		t.Errorf("a netns endpoint claimed a pod namespace: %v", other)
	}
}
