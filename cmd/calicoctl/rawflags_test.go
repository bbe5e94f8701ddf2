package main

import (
	"slices"
	"testing"
)

func TestTakeGlobalFlags(t *testing.T) {
	for _, c := range []struct {
		args      []string
		rest      []string
		endpoints string
		output    string
		err       bool
	}{
		{[]string{"P", "rule", "show", "--etcd-endpoints", "http://a:1"}, []string{"P", "rule", "show"}, "http://a:1", "", false},
		{[]string{"--etcd-endpoints=http://b:2", "show", "-o", "json"}, []string{"show"}, "http://b:2", "json", false},
		{[]string{"show", "--output=yaml", "--detailed"}, []string{"show", "--detailed"}, "", "yaml", false},
		{[]string{"show", "-o"}, nil, "", "", true},
		{[]string{"add", "w1", "auto", "--netns", "/x"}, []string{"add", "w1", "auto", "--netns", "/x"}, "", "", false},
	} {
		etcdEndpoints, outputFormat = "", ""
		rest, err := takeGlobalFlags(c.args)
		if (err != nil) != c.err {
			t.Errorf("%v: error %v", c.args, err)
			continue
		}
		if !c.err && (!slices.Equal(rest, c.rest) || etcdEndpoints != c.endpoints || outputFormat != c.output) {
			t.Errorf("%v: rest %v endpoints %q output %q", c.args, rest, etcdEndpoints, outputFormat)
		}
	}
	etcdEndpoints, outputFormat = "", ""
}
