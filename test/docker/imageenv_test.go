package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/docker/dockertest"
)

// TestImageEnvChoosesNothing: an image built with ENV CALICO_IP=auto and
// ENV CALICO_PROFILE=db (anyone can publish one) must not put its
// containers into profile db, nor get them wired without docker run asking:
// the agent honours only what docker run set. A container of that image
// run without -e is not wired; with -e CALICO_IP it is wired but in no
// profile (it reaches neither db's member nor anything else); with -e
// CALICO_PROFILE=web it is in web only. Honest containers of a plain image
// with -e CALICO_IP=auto -e CALICO_PROFILE=db are wired into db and reach
// each other.
//
// Before: the agent read the merged environment, so every container of
// the image was wired into db and reached db's members.
func TestImageEnvChoosesNothing(t *testing.T) {
	dw := newDockerWorld(t)
	const h1 = "host1"
	eng := dw.engines[h1]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	repo, tag := "calico-go-test/calico-env", dw.run
	img := repo + ":" + tag
	rootfs, err := dockertest.BuildRootfs()
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.ImportImage(ctx, bytes.NewReader(rootfs), repo, tag, `CMD ["/bin/sh"]`,
		"ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin", "ENV CALICO_IP=auto", "ENV CALICO_PROFILE=db",
		"LABEL org.calico-go.test-image=calico-env"); err != nil {
		t.Fatal(err)
	}
	var mine []string
	t.Cleanup(func() {
		// Containers first: an image in use cannot be removed.
		for _, c := range mine {
			dw.dockerErr(h1, "rm", "-f", c)
		}
		if out, err := dw.dockerErr(h1, "rmi", img); err != nil {
			t.Errorf("remove test image %s: %v: %s", img, err, out)
		}
	})
	run := func(name, image string, env ...string) string {
		n := dw.name(name)
		mine = append(mine, n)
		args := []string{"run", "--net=none", "--name", n}
		for _, e := range env {
			args = append(args, "-e", e)
		}
		dw.docker(t, h1, append(args, "-tid", image)...)
		return n
	}

	// Honest: db and a friend of db, from the plain image.
	db := run("db", dockertest.DefaultImage, "CALICO_IP=auto", "CALICO_PROFILE=db")
	friend := run("friend", dockertest.DefaultImage, "CALICO_IP=auto", "CALICO_PROFILE=db")
	dbIP := dw.endpointIP(t, h1, db)
	dw.endpointIP(t, h1, friend)

	// The image's containers.
	bare := run("img-bare", img)
	withIP := run("img-ip", img, "CALICO_IP=192.168.100.77")
	withWeb := run("img-web", img, "CALICO_IP=192.168.100.78", "CALICO_PROFILE=web")

	dw.expectReach(t, h1, friend, dbIP, true)
	// The agent handles start events in order: once the later containers
	// are wired, it has decided about the bare one.
	ipProfiles := dw.endpointProfiles(t, h1, withIP)
	webProfiles := dw.endpointProfiles(t, h1, withWeb)
	if err := dw.noEndpoint(h1, bare); err != nil {
		t.Errorf("a container of the image run without -e was wired: %v", err)
		if p := dw.endpointProfiles(t, h1, bare); len(p) > 0 {
			dw.expectReach(t, h1, bare, dbIP, false)
		}
	}
	if l := dw.agentLog(h1); !strings.Contains(l, bare) || !strings.Contains(l, "ignoring Calico settings that come from the container's image") {
		t.Errorf("the agent's log does not say it ignored the image's settings for %s", bare)
	}
	t.Logf("FIGURE: image with ENV CALICO_IP=auto CALICO_PROFILE=db: run without -e wired=%v; with -e CALICO_IP profiles=%v; with -e CALICO_PROFILE=web profiles=%v",
		dw.noEndpoint(h1, bare) != nil, ipProfiles, webProfiles)
	if len(ipProfiles) != 0 {
		t.Errorf("%s (only CALICO_IP given) has profiles %v; want none", withIP, ipProfiles)
	}
	if !slices.Equal(webProfiles, []string{"web"}) {
		t.Errorf("%s (CALICO_PROFILE=web given) has profiles %v; want [web]", withWeb, webProfiles)
	}
	dw.expectReach(t, h1, withIP, dbIP, false)
	dw.expectReach(t, h1, withWeb, dbIP, false)
	dw.expectReach(t, h1, friend, dbIP, true)
}

// endpointProfiles waits for workload's endpoint on host and returns its profiles.
func (dw *dockerWorld) endpointProfiles(t *testing.T, host, workload string) []string {
	t.Helper()
	var profiles []string
	waitFor(t, 15*time.Second, "endpoint of "+workload, func() error {
		out, err := dw.ctl(nil, host, "endpoint", "show", "-o", "json")
		if err != nil {
			return fmt.Errorf("endpoint show: %v: %s", err, out)
		}
		var eps []struct {
			Node     string   `json:"node"`
			Workload string   `json:"workload"`
			Profiles []string `json:"profiles"`
		}
		if err := json.Unmarshal([]byte(out), &eps); err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.Node == host && ep.Workload == workload {
				profiles = ep.Profiles
				return nil
			}
		}
		return fmt.Errorf("no endpoint %s on %s", workload, host)
	})
	return profiles
}
