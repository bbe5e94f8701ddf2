package client

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// refuseHostNetns fails when path is this process's own network namespace
// (the host's, for calicoctl). An endpoint record can name any path: one
// written by hand, or a /proc/PID/ns/net whose PID now belongs to a host
// process. Changing "the workload's" addresses there would change the
// host's own interfaces, so every operation on an existing endpoint's
// namespace checks this first, as wiring a new one does.
func refuseHostNetns(path string) error {
	var ns, self unix.Stat_t
	if err := unix.Stat(path, &ns); err != nil {
		return fmt.Errorf("workload netns %s: %v", path, err)
	}
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return fmt.Errorf("this process's network namespace: %v", err)
	}
	if ns.Dev == self.Dev && ns.Ino == self.Ino {
		return fmt.Errorf("workload netns %s is the host's own namespace; refusing to change the host's interfaces (fix or remove the endpoint with `calicoctl container remove`)", path)
	}
	return nil
}
