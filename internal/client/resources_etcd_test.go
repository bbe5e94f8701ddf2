package client

import (
	"context"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
)

// TestChangeResourcesOverHostileRecord: a record written straight into etcd
// that is not valid blocks create (it exists) but is repaired by apply, and
// applying twice writes nothing the second time.
func TestChangeResourcesOverHostileRecord(t *testing.T) {
	url := etcdtest.Start(t)
	ds, err := datastore.Connect(context.Background(), datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	c := New(ds)
	ctx := context.Background()
	raw := etcdtest.Dial(t, url)
	if _, err := raw.Put(ctx, datastore.PolicyKey("web"), `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"web"},"spec":{"selector":"a ="}}`); err != nil {
		t.Fatal(err)
	}

	rs := decodeT(t, twoDocs)
	if _, err := c.ChangeResources(ctx, Create, rs, false); err == nil || !strings.Contains(err.Error(), `GlobalNetworkPolicy "web" already exists, as a record that is not valid`) {
		t.Fatalf("create over a hostile record: %v", err)
	}
	if _, err := datastore.GetNetworkSet(ctx, ds, "outside"); err == nil {
		t.Fatal("a refused create wrote the network set")
	}
	res, err := c.ChangeResources(ctx, Apply, rs, false)
	if err != nil || outcomes(res) != "web=updated,outside=created" {
		t.Fatalf("apply: %v %v", outcomes(res), err)
	}
	p, err := datastore.GetPolicy(ctx, ds, "web")
	if err != nil || p.Spec.Selector != "app == 'web'" {
		t.Fatalf("repaired policy: %+v %v", p, err)
	}

	_, before, _ := ds.Read(ctx, datastore.ReadKey(datastore.PolicyKey("web")))
	res, err = c.ChangeResources(ctx, Apply, rs, false)
	_, after, _ := ds.Read(ctx, datastore.ReadKey(datastore.PolicyKey("web")))
	if err != nil || outcomes(res) != "web=unchanged,outside=unchanged" || after != before {
		t.Fatalf("second apply: %v %v, revision %d -> %d", outcomes(res), err, before, after)
	}
}
