package api

import "strings"

// Labels that every endpoint carries without anyone setting them, so
// selectors can pick workloads by where they run, what made them and which
// seed-style profiles they have (Calico exposes the same facts under
// projectcalico.org/...). A user's label under this prefix is refused, so a
// workload cannot claim another node or profile.
const (
	// ImplicitLabelPrefix: keys under it are the system's, never a user's.
	ImplicitLabelPrefix = "projectcalico.org/"
	// LabelNode: the node the endpoint is on.
	LabelNode = ImplicitLabelPrefix + "node"
	// LabelOrchestrator: netns, docker, libnetwork or cni.
	LabelOrchestrator = ImplicitLabelPrefix + "orchestrator"
	// LabelWorkload: the workload's name.
	LabelWorkload = ImplicitLabelPrefix + "workload"
	// LabelNamespace and LabelPod are the pod's namespace and name a CNI
	// runtime passed (K8S_POD_NAMESPACE, K8S_POD_NAME): the CNI plugin
	// writes them into the record, and only a CNI endpoint's count.
	LabelNamespace = ImplicitLabelPrefix + "namespace"
	LabelPod       = ImplicitLabelPrefix + "pod"
	// ProfileLabelPrefix + NAME is set (to "") for each profile of the
	// endpoint: has(profile.projectcalico.org/web).
	ProfileLabelPrefix = "profile.projectcalico.org/"
)

// IsImplicitLabel says whether key is one the system sets.
func IsImplicitLabel(key string) bool {
	return strings.HasPrefix(key, ImplicitLabelPrefix) || strings.HasPrefix(key, ProfileLabelPrefix)
}

// EffectiveLabels are the labels selectors see for ep: its own, then the
// implicit ones (which win: the record's own labels under the implicit
// prefixes are ignored, whoever wrote them, but for a CNI endpoint's pod
// namespace and name, which its plugin records).
func (ep Endpoint) EffectiveLabels() map[string]string {
	out := make(map[string]string, len(ep.Labels)+3+len(ep.Profiles))
	for k, v := range ep.Labels {
		if !IsImplicitLabel(k) || ep.Orchestrator == OrchestratorCNI && (k == LabelNamespace || k == LabelPod) {
			out[k] = v
		}
	}
	out[LabelNode] = ep.Node
	out[LabelOrchestrator] = ep.Orchestrator
	out[LabelWorkload] = ep.Workload
	for _, p := range ep.Profiles {
		out[ProfileLabelPrefix+p] = ""
	}
	return out
}
