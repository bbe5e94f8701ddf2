package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestDockerLabelsAndNames: Docker labels become endpoint labels, and
// Docker workloads answer to the names users know.
//
//   - A libnetwork container's `docker run --label`s and its network's
//     `docker network create --label`s are its endpoint's labels (the
//     container's win on a clash); labels that are no valid endpoint label,
//     or that claim calico's own prefixes, are skipped with a log line and
//     the container runs. An image's own LABELs are not taken: its author
//     does not choose the policy its containers get.
//   - A CALICO_IP container's --labels are its endpoint's too.
//   - `calicoctl container NAME ...` takes a libnetwork container's name and
//     id (before: `unknown container "a1"`, its workload being
//     docker-<endpoint id>), `endpoint show` shows the name, and an address
//     clash names the container that holds the address (before: "is
//     already assigned (to host1~~libnetwork)").
func TestDockerLabelsAndNames(t *testing.T) {
	dw := newDockerWorld(t)
	const h1 = "host1"
	eng := dw.engines[h1]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// An image whose author put a label on it.
	repo, tag := "calico-go-test/calico-label", dw.run
	img := repo + ":" + tag
	rootfs, err := dockertest.BuildRootfs()
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.ImportImage(ctx, bytes.NewReader(rootfs), repo, tag, `CMD ["/bin/sh"]`,
		"ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin", "LABEL role=admin"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dw.removeOurs(t) // containers first: an image in use cannot be removed
		if out, err := dw.dockerErr(h1, "rmi", img); err != nil {
			t.Errorf("remove test image %s: %v: %s", img, err, out)
		}
	})

	netA, netB := dw.name("lnetA"), dw.name("lnetB")
	dw.docker(t, h1, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.30.0/24",
		"--label", "tier=front", "--label", "env=test", "--label", "projectcalico.org/node=elsewhere", netA)
	dw.docker(t, h1, "network", "create", "--driver=calico", "--ipam-driver=calico-ipam", "--subnet=192.168.31.0/24", netB)

	l1 := dw.name("l1")
	dw.docker(t, h1, "run", "--net", netA, "--ip", "192.168.30.50", "--name", l1,
		"--label", "app=web", "--label", "env=prod", "--label", "description=a web server",
		"--label", "profile.projectcalico.org/admin=", "-tid", img)
	id := dw.containerID(t, h1, l1)
	workload := "docker-" // the libnetwork workload: docker-<endpoint id>
	t.Run("libnetwork: container and network labels are the endpoint's", func(t *testing.T) {
		var got map[string]string
		waitFor(t, 20*time.Second, "labels of "+l1, func() (err error) {
			got, err = dw.labels(h1, l1)
			if err == nil && got["app"] != "web" {
				err = fmt.Errorf("not learnt yet: %v", got)
			}
			return err
		})
		workload = got["projectcalico.org/workload"]
		want := map[string]string{
			"app": "web", "env": "prod", "tier": "front", // the container's env wins
			"projectcalico.org/node": h1, "projectcalico.org/orchestrator": "libnetwork",
			"projectcalico.org/workload": workload, "profile.projectcalico.org/" + netA: "",
		}
		if !maps.Equal(got, want) || !strings.HasPrefix(workload, "docker-") {
			t.Errorf("label show %s:\n got %v\nwant %v", l1, got, want)
		}
		t.Logf("FIGURE: %s label show: %v", l1, got)
		log := dw.agentLog(h1)
		for _, skipped := range []string{"description", "profile.projectcalico.org/admin", "projectcalico.org/node"} {
			if !lineWith(log, "Docker label not made an endpoint label", skipped) {
				t.Errorf("the agent's log does not say it skipped %s", skipped)
			}
		}
	})
	t.Run("libnetwork: the container's name and id are accepted; endpoint show names it", func(t *testing.T) {
		for _, ref := range []string{l1, id, id[:12], workload} {
			if out := dw.mustCtl(t, h1, "container", ref, "profile", "show"); out != netA {
				t.Errorf("container %s profile show: %q, want %q", ref, out, netA)
			}
		}
		if got, err := dw.labels(h1, id[:12]); err != nil || got["app"] != "web" {
			t.Errorf("label show by id: %v %v", got, err)
		}
		dw.mustCtl(t, h1, "container", l1, "label", "add", "stage=canary")
		if got, err := dw.labels(h1, l1); err != nil || got["stage"] != "canary" {
			t.Errorf("label add by name: %v %v", got, err)
		}
		out := dw.mustCtl(t, h1, "endpoint", "show", "--detailed")
		if !strings.Contains(out, "CONTAINER") || !lineWith(out, workload, l1, id[:12]) {
			t.Errorf("endpoint show --detailed does not show %s and id %s beside %s:\n%s", l1, id[:12], workload, out)
		}
		t.Logf("FIGURE: endpoint show --detailed:\n%s", out)
	})
	t.Run("an address clash names the container holding it", func(t *testing.T) {
		out, err := dw.dockerErr(h1, "run", "--net", netA, "--ip", "192.168.30.50", "--name", dw.name("l2"), "-tid", img)
		want := fmt.Sprintf(`192.168.30.50 is already assigned to Docker container %q on host %s (workload %s)`, l1, h1, workload)
		if err == nil || !strings.Contains(out, want) || strings.Contains(out, "~~libnetwork") {
			t.Errorf("docker run --ip of a taken address: want %q, got %v: %s", want, err, out)
		}
	})
	t.Run("a container on two calico networks: its name is ambiguous, so say which", func(t *testing.T) {
		dw.docker(t, h1, "network", "connect", netB, l1)
		want := fmt.Sprintf("Docker container %q has 2 endpoints on host %s, one per calico network", l1, h1)
		waitFor(t, 20*time.Second, "both endpoints of "+l1+" named", func() error {
			if out, err := dw.ctl(nil, h1, "container", l1, "label", "show"); err == nil || !strings.Contains(out, want) {
				return fmt.Errorf("label show of a container on two networks: %v: %s", err, out)
			}
			return nil
		})
		dw.docker(t, h1, "network", "disconnect", netB, l1)
	})
	t.Run("container add by id: Docker labels, --label over them, the name shown and accepted", func(t *testing.T) {
		w9 := dw.name("w9")
		dw.docker(t, h1, "run", "--net=none", "--label", "app=x", "--label", "keep=1", "--name", w9, "-tid", img)
		id9 := dw.containerID(t, h1, w9)
		dw.mustCtl(t, h1, "container", "add", id9[:12], "192.168.30.77", "--label", "app=y", "--label", "extra=1")
		got, err := dw.labels(h1, w9) // by name, though the workload is named by the id given
		want := map[string]string{"app": "y", "keep": "1", "extra": "1", "projectcalico.org/node": h1,
			"projectcalico.org/orchestrator": "docker", "projectcalico.org/workload": id9[:12]}
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("label show %s:\n got %v (%v)\nwant %v", w9, got, err, want)
		}
		if out := dw.mustCtl(t, h1, "endpoint", "show"); !lineWith(out, id9[:12], w9, "192.168.30.77/32") {
			t.Errorf("endpoint show does not name %s beside workload %s:\n%s", w9, id9[:12], out)
		}
	})
	t.Run("CALICO_IP container: its labels are the endpoint's", func(t *testing.T) {
		d1 := dw.name("d1")
		dw.docker(t, h1, "run", "--net=none", "-e", "CALICO_IP=auto", "--label", "app=db", "--name", d1, "-tid", img)
		var got map[string]string
		waitFor(t, 20*time.Second, "labels of "+d1, func() (err error) {
			got, err = dw.labels(h1, d1)
			return err
		})
		want := map[string]string{"app": "db", "projectcalico.org/node": h1, "projectcalico.org/orchestrator": "docker",
			"projectcalico.org/workload": d1}
		if !maps.Equal(got, want) {
			t.Errorf("label show %s:\n got %v\nwant %v", d1, got, want)
		}
	})
}

// labels is `calicoctl container ref label show -o json` on host, as a map.
func (dw *dockerWorld) labels(host, ref string) (map[string]string, error) {
	out, err := dw.ctl(nil, host, "container", ref, "label", "show", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("label show %s: %v: %s", ref, err, out)
	}
	var rows []struct {
		Key, Value string
		Implicit   bool
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("label show -o json: %v: %s", err, out)
	}
	m := map[string]string{}
	for _, r := range rows {
		m[r.Key] = r.Value
	}
	return m, nil
}

func (dw *dockerWorld) containerID(t *testing.T, host, ctr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ci, err := dw.engines[host].Inspect(ctx, ctr)
	if err != nil {
		t.Fatal(err)
	}
	return ci.ID
}

// lineWith says whether a line of out holds every one of words.
func lineWith(out string, words ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			return true
		}
	}
	return false
}
