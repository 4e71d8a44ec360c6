package main

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
)

type typedExec string

func (e typedExec) Type() string { return string(e) }
func (typedExec) Run(context.Context, *fsm.Task, func(agent.TaskStatus)) error {
	return nil
}

func execTypes(es []agent.Executor) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Type())
	}
	return out
}

// TestDisableTaskTypes: the disabled types' executors are dropped (so the
// agent does not advertise them and the leader places none on it), the
// others stay in order; a type no executor has but atomfed knows (an agent
// without a database) is accepted; an unknown name is refused with the
// known types listed.
func TestDisableTaskTypes(t *testing.T) {
	all := []agent.Executor{typedExec(fsm.TaskTypeProbe), typedExec(fsm.TaskTypeTenantPublisher), typedExec(fsm.TaskTypeGlobalPublisher),
		typedExec(fsm.TaskTypeGlobalSubscriber), typedExec("backup")}
	got, err := withoutTaskTypes(all, []string{fsm.TaskTypeGlobalPublisher, fsm.TaskTypeGlobalSubscriber, "backup"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{fsm.TaskTypeProbe, fsm.TaskTypeTenantPublisher}; !reflect.DeepEqual(execTypes(got), want) {
		t.Fatalf("kept %v, want %v", execTypes(got), want)
	}
	if len(all) != 5 || all[2].Type() != fsm.TaskTypeGlobalPublisher {
		t.Fatalf("the caller's list was changed: %v", execTypes(all))
	}
	got, err = withoutTaskTypes(all[:1], []string{fsm.TaskTypeTenantSubscriber, fsm.TaskTypeSyncStandby})
	if err != nil || !reflect.DeepEqual(execTypes(got), []string{fsm.TaskTypeProbe}) {
		t.Fatalf("an agent without replication executors: %v, %v", execTypes(got), err)
	}
	if got, err := withoutTaskTypes(all, nil); err != nil || len(got) != len(all) {
		t.Fatalf("nothing disabled: %v, %v", execTypes(got), err)
	}
	_, err = withoutTaskTypes(all, []string{"global-publishers"})
	if err == nil || !strings.Contains(err.Error(), `"global-publishers" is not a task type`) || !strings.Contains(err.Error(), "global-publisher, global-subscriber") {
		t.Fatalf("a typo: %v", err)
	}
}
