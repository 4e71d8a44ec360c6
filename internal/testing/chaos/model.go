package chaos

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Operation kinds of the register workload: each key is a tenant, its
// value a label written with a unique value, its version the tenant's
// modify_index.
const (
	OpRead = "read" // GET /v1/tenants/{key} (linearizable)
	OpPut  = "put"  // PUT /v1/tenants/{key}
	OpCAS  = "cas"  // PUT /v1/tenants/{key}?cas=N (N=0: create only)
)

// Input is what a client asked for.
type Input struct {
	Kind  string
	Key   string
	Value string // put, cas: the value written
	// cas: the version the client read before, by value and index (it
	// sends the index; values are unique, so the value names the index).
	// ExpExists false means cas=0, "create only".
	ExpExists bool
	ExpValue  string
	ExpIndex  uint64
}

// Result is how an operation ended.
type Result int

// Results.
const (
	// ResOK: a read found the key, a write was acknowledged.
	ResOK Result = iota
	// ResNotFound: a read found no such key.
	ResNotFound
	// ResConflict: a cas was refused (409): the version had moved.
	ResConflict
	// ResUnknown: the write may or may not have happened (timeout,
	// connection lost, 503 outcome_unknown). Its return time is the end of
	// the history: it may take effect at any point after its call.
	ResUnknown
)

func (r Result) String() string {
	return [...]string{"ok", "not_found", "conflict", "unknown"}[r]
}

// Output is what the client saw.
type Output struct {
	Result Result
	Value  string // read: the value found
	Index  uint64 // read: the modify_index found; put, cas: the new one
}

// regState is one key's state in the model. Index 0 means "exists, index
// not known yet": a write whose outcome is unknown leaves it so, and the
// first read of that value fills it in (a value's index never changes, as
// every value is written at most once). Floor is the highest index of any
// version before (or of) the current one: raft log indexes grow along the
// commit order, so every later version, known or learnt, must be above it.
type regState struct {
	Exists bool
	Value  string
	Index  uint64
	Floor  uint64
}

func (s regState) String() string {
	if !s.Exists {
		return "absent"
	}
	if s.Index == 0 {
		return s.Value + "@?"
	}
	return fmt.Sprintf("%s@%d", s.Value, s.Index)
}

// matches reports whether a cas expecting in's version would pass in s.
func (s regState) matches(in Input) bool {
	if !in.ExpExists {
		return !s.Exists
	}
	if !s.Exists || s.Value != in.ExpValue {
		return false
	}
	return s.Index == 0 || s.Index == in.ExpIndex
}

// newer reports whether index follows every version so far: raft log
// indexes grow, so a write acknowledged at index i can only replace values
// written at lower indexes.
func (s regState) newer(index uint64) bool { return index > s.Floor }

// known returns the state of a version whose index is known.
func known(value string, index uint64) regState {
	return regState{Exists: true, Value: value, Index: index, Floor: index}
}

// unknownIndex returns the state after a write whose index is not known.
func (s regState) unknownIndex(value string) regState {
	return regState{Exists: true, Value: value, Floor: s.Floor}
}

// stepRegister is the sequential specification of one key.
func stepRegister(s regState, in Input, out Output) (bool, regState) {
	switch in.Kind {
	case OpRead:
		switch out.Result {
		case ResNotFound:
			return !s.Exists, s
		case ResOK:
			if !s.Exists || s.Value != out.Value {
				return false, s
			}
			if s.Index != 0 {
				return s.Index == out.Index, s
			}
			// Learn the index of a value written with an unknown outcome.
			return s.newer(out.Index), known(out.Value, out.Index)
		}
	case OpPut:
		switch out.Result {
		case ResOK:
			return s.newer(out.Index), known(in.Value, out.Index)
		case ResUnknown:
			return true, s.unknownIndex(in.Value)
		}
	case OpCAS:
		match := s.matches(in)
		switch out.Result {
		case ResOK:
			return match && s.newer(out.Index), known(in.Value, out.Index)
		case ResConflict:
			return !match, s
		case ResUnknown:
			if match {
				return true, s.unknownIndex(in.Value)
			}
			return true, s
		}
	}
	return false, s
}

// RegisterModel is the porcupine model of the workload: a register per
// key with versions, checked per key.
var RegisterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return regState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		return stepRegister(state.(regState), input.(Input), output.(Output))
	},
	Equal: func(a, b interface{}) bool { return a.(regState) == b.(regState) },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(Input), output.(Output)
		res := out.Result.String()
		if out.Result == ResOK && out.Index != 0 {
			res = fmt.Sprintf("ok@%d", out.Index)
		}
		switch in.Kind {
		case OpRead:
			if out.Result == ResOK {
				return fmt.Sprintf("read(%s) -> %s@%d", in.Key, out.Value, out.Index)
			}
			return fmt.Sprintf("read(%s) -> %s", in.Key, res)
		case OpPut:
			return fmt.Sprintf("put(%s, %s) -> %s", in.Key, in.Value, res)
		default:
			exp := "absent"
			if in.ExpExists {
				exp = fmt.Sprintf("%s@%d", in.ExpValue, in.ExpIndex)
			}
			return fmt.Sprintf("cas(%s, %s -> %s) -> %s", in.Key, exp, in.Value, res)
		}
	},
	DescribeState: func(state interface{}) string { return state.(regState).String() },
}
