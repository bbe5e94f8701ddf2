package walkthrough

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/daemon"
)

// stopDaemons ends every daemon whose pid file lies under dir: the world's
// calico-nodes and its datastore. Only processes this world started have pid
// files there.
func stopDaemons(dir string) {
	if dir == "" {
		return
	}
	var pidFiles []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".pid") {
			pidFiles = append(pidFiles, p)
		}
		return nil
	})
	// Agents first, so they do not spend their last seconds on a dead datastore.
	for _, p := range pidFiles {
		if !strings.HasSuffix(p, "etcd.pid") {
			daemon.Stop(p, 10*time.Second)
		}
	}
	for _, p := range pidFiles {
		if strings.HasSuffix(p, "etcd.pid") {
			daemon.Stop(p, 10*time.Second)
		}
	}
}
