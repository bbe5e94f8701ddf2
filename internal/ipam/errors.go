package ipam

import (
	"errors"
	"fmt"
)

// Kinds of failure, for errors.Is. The messages users see are the specific
// ones built by errorf; these only classify them so callers (calicoctl, the
// Docker and CNI drivers) can react without matching text.
var (
	// ErrInvalid: a malformed argument (bad address, empty handle, ...).
	ErrInvalid = errors.New("invalid argument")
	// ErrNoPools: no pool can serve the request at all.
	ErrNoPools = errors.New("no usable pools")
	// ErrNotInPool: a specific address lies outside every pool.
	ErrNotInPool = errors.New("address not in any pool")
	// ErrAlreadyAssigned: a specific address is taken.
	ErrAlreadyAssigned = errors.New("address already assigned")
	// ErrNotAssigned: releasing an address nobody holds.
	ErrNotAssigned = errors.New("address not assigned")
	// ErrNotHolder: releasing, for one handle, an address another holds.
	ErrNotHolder = errors.New("address held by another handle")
	// ErrExhausted: every address of the candidate pools is taken.
	ErrExhausted = errors.New("no free addresses")
	// ErrConflict: the datastore kept changing under us and we gave up retrying.
	ErrConflict = errors.New("too many concurrent updates")
	// ErrInUse: removing a pool whose addresses are still assigned.
	ErrInUse = errors.New("pool in use")
	// ErrCorrupt: the datastore holds something this package cannot use
	// (overlapping blocks, undecodable records); `calicoctl ipam check` explains.
	ErrCorrupt = errors.New("inconsistent IPAM data")
)

// ipamError carries a user-facing message and a kind from the list above.
type ipamError struct {
	kind error
	msg  string
}

func (e *ipamError) Error() string { return e.msg }
func (e *ipamError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &ipamError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
