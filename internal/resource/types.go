// Package resource holds the label-based policy resources in Calico v3's own
// form (apiVersion projectcalico.org/v3) — GlobalNetworkPolicy and
// GlobalNetworkSet, cluster-wide since there are no namespaces here — and
// reads them from YAML or JSON documents: strictly (an unknown field is an
// error), every error naming the line and column of the field at fault, and
// nothing returned unless every document of the input is valid, so a bad
// file changes nothing.
package resource

// APIVersion is the only apiVersion accepted.
const APIVersion = "projectcalico.org/v3"

// Kinds.
const (
	KindGlobalNetworkPolicy = "GlobalNetworkPolicy"
	KindGlobalNetworkSet    = "GlobalNetworkSet"
)

// Rule actions, as Calico v3 spells them.
const (
	ActionAllow = "Allow"
	ActionDeny  = "Deny"
	ActionLog   = "Log"
	ActionPass  = "Pass"
)

// Policy types.
const (
	TypeIngress = "Ingress"
	TypeEgress  = "Egress"
)

// Resource is a decoded document of a known kind.
type Resource interface {
	// GetKind and GetName identify it: kinds are cluster-wide, so a kind
	// and a name are a unique key.
	GetKind() string
	GetName() string
	// GetMetadata is the resource's metadata, where the datastore keeps
	// its revision, creation time and UID.
	GetMetadata() *ObjectMeta
}

// TypeMeta is the document's header.
type TypeMeta struct {
	APIVersion string `json:"apiVersion" yaml:"apiVersion"`
	Kind       string `json:"kind" yaml:"kind"`
}

// ObjectMeta is what this project keeps of Kubernetes' metadata.
type ObjectMeta struct {
	Name   string            `json:"name" yaml:"name"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	// ResourceVersion is the datastore revision a read returned; an
	// update that carries it fails if the resource changed since.
	ResourceVersion string `json:"resourceVersion,omitempty" yaml:"resourceVersion,omitempty"`
	// CreationTimestamp is set by the datastore client, RFC 3339.
	CreationTimestamp string `json:"creationTimestamp,omitempty" yaml:"creationTimestamp,omitempty"`
	// UID is set by the datastore client.
	UID string `json:"uid,omitempty" yaml:"uid,omitempty"`
}

// GlobalNetworkPolicy selects endpoints and orders rules for them.
type GlobalNetworkPolicy struct {
	TypeMeta `json:",inline" yaml:",inline"`
	Metadata ObjectMeta              `json:"metadata" yaml:"metadata"`
	Spec     GlobalNetworkPolicySpec `json:"spec" yaml:"spec"`
}

func (p *GlobalNetworkPolicy) GetKind() string          { return KindGlobalNetworkPolicy }
func (p *GlobalNetworkPolicy) GetName() string          { return p.Metadata.Name }
func (p *GlobalNetworkPolicy) GetMetadata() *ObjectMeta { return &p.Metadata }

// GlobalNetworkPolicySpec is Calico v3's, less what needs namespaces,
// service accounts or host endpoints.
type GlobalNetworkPolicySpec struct {
	// Order: lower first; a policy without an order comes after every
	// policy with one; ties are broken by name.
	Order *float64 `json:"order,omitempty" yaml:"order,omitempty"`
	// Selector picks the endpoints the policy applies to; empty means all().
	Selector string `json:"selector,omitempty" yaml:"selector,omitempty"`
	// Types are Ingress and/or Egress. Empty: Ingress, plus Egress when
	// there are egress rules (Calico's default).
	Types   []string `json:"types,omitempty" yaml:"types,omitempty"`
	Ingress []Rule   `json:"ingress,omitempty" yaml:"ingress,omitempty"`
	Egress  []Rule   `json:"egress,omitempty" yaml:"egress,omitempty"`
}

// Rule is one ingress or egress rule.
type Rule struct {
	Action      string      `json:"action" yaml:"action"`
	IPVersion   *int        `json:"ipVersion,omitempty" yaml:"ipVersion,omitempty"`
	Protocol    *Protocol   `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	NotProtocol *Protocol   `json:"notProtocol,omitempty" yaml:"notProtocol,omitempty"`
	ICMP        *ICMPFields `json:"icmp,omitempty" yaml:"icmp,omitempty"`
	NotICMP     *ICMPFields `json:"notICMP,omitempty" yaml:"notICMP,omitempty"`
	Source      EntityRule  `json:"source,omitempty" yaml:"source,omitempty"`
	Destination EntityRule  `json:"destination,omitempty" yaml:"destination,omitempty"`
}

// ICMPFields match an ICMP type and, optionally, code.
type ICMPFields struct {
	Type *int `json:"type,omitempty" yaml:"type,omitempty"`
	Code *int `json:"code,omitempty" yaml:"code,omitempty"`
}

// EntityRule matches the source or destination of a packet.
type EntityRule struct {
	Nets        []string `json:"nets,omitempty" yaml:"nets,omitempty"`
	NotNets     []string `json:"notNets,omitempty" yaml:"notNets,omitempty"`
	Selector    string   `json:"selector,omitempty" yaml:"selector,omitempty"`
	NotSelector string   `json:"notSelector,omitempty" yaml:"notSelector,omitempty"`
	Ports       []Port   `json:"ports,omitempty" yaml:"ports,omitempty"`
	NotPorts    []Port   `json:"notPorts,omitempty" yaml:"notPorts,omitempty"`
}

// GlobalNetworkSet is a named, labelled list of CIDRs that selectors in
// rules can match, like endpoints.
type GlobalNetworkSet struct {
	TypeMeta `json:",inline" yaml:",inline"`
	Metadata ObjectMeta           `json:"metadata" yaml:"metadata"`
	Spec     GlobalNetworkSetSpec `json:"spec" yaml:"spec"`
}

func (s *GlobalNetworkSet) GetKind() string          { return KindGlobalNetworkSet }
func (s *GlobalNetworkSet) GetName() string          { return s.Metadata.Name }
func (s *GlobalNetworkSet) GetMetadata() *ObjectMeta { return &s.Metadata }

// GlobalNetworkSetSpec lists the set's networks.
type GlobalNetworkSetSpec struct {
	Nets []string `json:"nets,omitempty" yaml:"nets,omitempty"`
}
