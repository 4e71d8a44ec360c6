package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

// TestAgentWithADatabaseRunsTheSwitchoverSteps: an agent that knows its
// region's PostgreSQL has an executor (and so gossips the capability) for
// every replication and switchover step task type, and its capabilities
// still fit the Serf tag set (memberlist caps it at 512 bytes in all).
func TestAgentWithADatabaseRunsTheSwitchoverSteps(t *testing.T) {
	o := agentOptions{Region: "us-east", PostgresDSN: "postgres://atomfed@db.us-east.internal:5432/app", Logger: hclog.NewNullLogger()}
	execs, db, err := agentExecutors(o, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if db == nil || db.Host != "db.us-east.internal" {
		t.Fatalf("database endpoint %+v", db)
	}
	var types []string
	for _, e := range execs {
		types = append(types, e.Type())
	}
	for _, want := range append(fsm.ReplicationTaskTypes(), fsm.SwitchoverTaskTypes()...) {
		if !slices.Contains(types, want) {
			t.Errorf("the agent has no executor for %s tasks (it has %v)", want, types)
		}
	}
	if caps := strings.Join(types, ","); len(caps) > 256 {
		t.Errorf("the capabilities tag is %d bytes: %s", len(caps), caps)
	}
}
