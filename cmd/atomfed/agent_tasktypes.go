package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
)

// knownTaskTypes are the task types an agent may be told not to run
// (--disable-task-types), besides those of the executors it built: an
// agent without a database builds no replication executors, and turning
// replication off there must still be accepted.
var knownTaskTypes = append([]string{
	fsm.TaskTypeProbe, fsm.TaskTypeMetrics, fsm.TaskTypeBackup, fsm.TaskTypeDrill,
	fsm.TaskTypeTenantPublisher, fsm.TaskTypeTenantSubscriber, fsm.TaskTypeSyncStandby,
	fsm.TaskTypeGlobalPublisher, fsm.TaskTypeGlobalSubscriber,
}, fsm.SwitchoverTaskTypes()...)

// withoutTaskTypes drops the executors of the disabled task types. An
// agent advertises the types of its executors as its capabilities, so the
// leader never places a disabled type on it: in a region where every agent
// disables a type, tasks of that type stay unplaced (pending), as in a
// region without agents. A name that is no task type is refused, so that a
// typo does not leave a component running.
func withoutTaskTypes(execs []agent.Executor, disabled []string) ([]agent.Executor, error) {
	if len(disabled) == 0 {
		return execs, nil
	}
	known := slices.Clone(knownTaskTypes)
	for _, e := range execs {
		if !slices.Contains(known, e.Type()) {
			known = append(known, e.Type())
		}
	}
	sort.Strings(known)
	for _, d := range disabled {
		if !slices.Contains(known, d) {
			return nil, fmt.Errorf("--disable-task-types: %q is not a task type; known types: %s", d, strings.Join(known, ", "))
		}
	}
	out := execs[:0:0]
	for _, e := range execs {
		if !slices.Contains(disabled, e.Type()) {
			out = append(out, e)
		}
	}
	return out, nil
}
