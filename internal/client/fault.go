package client

import (
	"os"
	"syscall"
)

// FaultEnv names a test-only fault hook: when it is set to the name of a
// step of `container add` or `container remove`, the process kills itself
// with SIGKILL right after that step, as a crash or an impatient
// orchestrator would at exactly that moment. Steps are named by what was
// just done:
//
//	add:    after-address (addresses taken), after-veth (interface wired),
//	        after-record (endpoint written)
//	remove: after-record (endpoint deleted), after-veth (interface deleted)
//	node stop --cleanup: uninstall-after-tunnels, uninstall-after-routes,
//	        uninstall-after-forward, uninstall-after-table (UninstallKernel)
//
// The agent has one more, which makes a step fail instead of killing:
// "policy-write-fails:PATH" fails every nftables policy write while PATH
// exists (internal/dataplane/nft/intact.go; test/security/policyfail_test.go).
//
// test/security/crash_test.go uses it to prove that rerunning the command
// finishes the job, test/security/vxlan_test.go that an interrupted
// uninstall never leaves a tunnel without its guard. Never set it outside
// tests.
const FaultEnv = "CALICO_FAULT"

// faultPoint is where the hook fires.
func faultPoint(step string) {
	if os.Getenv(FaultEnv) == step {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; never continue past the step
	}
}
