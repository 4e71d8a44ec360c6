package raftlog

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestKilledMidAppend kills a process that appends as fast as it can, with
// SIGKILL at a moment of its own choosing, several times over the same
// directory: every append the process saw succeed is there when the store
// opens again, the log is whole, and appending goes on. (A killed process
// leaves its writes in the page cache: this checks torn appends and
// recovery, not a power cut.)
func TestKilledMidAppend(t *testing.T) {
	if dir := os.Getenv("RAFTLOG_CRASH_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestKilledMidAppend$")
		cmd.Env = append(os.Environ(), "RAFTLOG_CRASH_DIR="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var acked uint64
		sc := bufio.NewScanner(out)
		deadline := time.Now().Add(time.Duration(100+round*70) * time.Millisecond)
		for sc.Scan() {
			n, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked = n
			if time.Now().After(deadline) {
				break
			}
		}
		cmd.Process.Kill()
		for sc.Scan() { // acknowledgements already on their way
			if n, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
				acked = n
			}
		}
		cmd.Wait()
		if acked == 0 {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}
		s := open(t, dir, 1<<16)
		last, _ := s.LastIndex()
		if last < acked {
			t.Fatalf("round %d: log ends at %d, but %d was acknowledged", round, last, acked)
		}
		var l raft.Log
		for i := uint64(1); i <= last; i++ {
			if err := s.GetLog(i, &l); err != nil || string(l.Data) != crashData(i) {
				t.Fatalf("round %d: index %d: %q %v", round, i, l.Data, err)
			}
		}
		t.Logf("round %d: %d acknowledged, %d in the log", round, acked, last)
		s.Close()
	}
}

func crashData(i uint64) string { return fmt.Sprintf("entry %d %0*d", i, int(i%300), 0) }

// crashChild appends to the log in dir until it is killed, printing the
// last index of every append that returned.
func crashChild(dir string) {
	s, err := Open(dir, Options{SegmentSize: 1 << 16})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	next, _ := s.LastIndex()
	next++
	w := bufio.NewWriter(os.Stdout)
	for {
		n := uint64(next%7 + 1)
		logs := make([]*raft.Log, n)
		for j := range logs {
			idx := next + uint64(j)
			logs[j] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: []byte(crashData(idx))}
		}
		if err := s.StoreLogs(logs); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		next += n
		fmt.Fprintln(w, next-1)
		w.Flush()
	}
}
