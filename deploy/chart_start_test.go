package deploy_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// secretFiles maps what the one-time job makes to the files `atomfed
// secrets init --out` writes: Secret key -> file, per Secret flag.
var secretFiles = map[string]map[string]string{
	"--tls-secret":    {"ca.pem": "ca.pem", "server.pem": "server.pem", "server-key.pem": "server-key.pem", "agent.pem": "agent.pem", "agent-key.pem": "agent-key.pem"},
	"--gossip-secret": {"gossip.key": "gossip.key"},
	"--token-secret":  {"token": "federation-token"},
}

// TestChartServersFormAFederation: the rendered chart, run as Kubernetes
// would run it, forms a federation. The secrets job's own arguments make
// the material (with --out instead of --kubernetes); three pods of the
// StatefulSet run the rendered arguments and environment with the
// kubelet's $(VAR) expansion, their Secret volumes holding the job's files
// by key, each pod on its own loopback address (127.0.0.1-3, standing for
// the pod IPs and the headless Service's names; the wildcard bind address
// is the pod's own). Every server becomes ready by the rendered readiness
// probe, and a pod sent SIGTERM leaves within its grace period and exits 0.
func TestChartServersFormAFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	http1, raft, serf := freePort(t), freePort(t), freePort(t)
	r := mustRender(t, map[string]any{"server": map[string]any{"ports": map[string]any{"http": http1, "raft": raft, "serf": serf}}})
	dir := t.TempDir()

	// The one-time job, writing files.
	job := r.one(t, "Job", "fed-atomfed-secrets-init").(*batchv1.Job)
	secrets := filepath.Join(dir, "secrets")
	args := []string{"--out", secrets}
	secretOf := map[string]map[string]string{} // Secret name -> key -> file
	for _, a := range container(t, &job.Spec.Template.Spec, "secrets-init").Args {
		flag, val, _ := strings.Cut(a, "=")
		if keys, ok := secretFiles[flag]; ok {
			secretOf[val] = keys
			continue
		}
		if a != "--kubernetes" {
			args = append(args, a)
		}
	}
	if out, err := exec.Command(atomfedBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("the job's arguments: %v\n%s", err, out)
	}
	secretValue := func(name, key string) []byte {
		f, ok := secretOf[name][key]
		if !ok {
			t.Fatalf("the pod wants key %s of Secret %s, which the job does not make", key, name)
		}
		b, err := os.ReadFile(filepath.Join(secrets, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	sts := r.one(t, "StatefulSet", "fed-atomfed-server").(*appsv1.StatefulSet)
	pod := sts.Spec.Template.Spec
	c := container(t, &pod, "server")
	ip := func(i int) string { return fmt.Sprintf("127.0.0.%d", i+1) }
	type proc struct {
		cmd  *exec.Cmd
		log  *bytes.Buffer
		done chan error
	}
	var procs []*proc
	for i := range 3 {
		name := fmt.Sprintf("fed-atomfed-server-%d", i)
		root := filepath.Join(dir, name)
		env := map[string]string{"POD_NAME": name, "POD_NAMESPACE": "atomfed", "POD_IP": ip(i)}
		// Volumes, mounted under the pod's root.
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = filepath.Join(root, m.MountPath)
			if err := os.MkdirAll(mounts[m.MountPath], 0o700); err != nil {
				t.Fatal(err)
			}
			for _, v := range pod.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				for _, it := range v.Secret.Items {
					if err := os.WriteFile(filepath.Join(mounts[m.MountPath], it.Path), secretValue(v.Secret.SecretName, it.Key), 0o400); err != nil {
						t.Fatal(err)
					}
				}
				if len(v.Secret.Items) == 0 {
					for key := range secretOf[v.Secret.SecretName] {
						_ = os.WriteFile(filepath.Join(mounts[m.MountPath], key), secretValue(v.Secret.SecretName, key), 0o400)
					}
				}
			}
		}
		// The pod's network: its wildcard is its own address, the
		// headless names resolve to the pods' addresses.
		rewrite := func(a string) string {
			a = expandK8s(a, env)
			a = strings.ReplaceAll(a, "0.0.0.0:", ip(i)+":")
			for j := range 3 {
				a = strings.ReplaceAll(a, fmt.Sprintf("fed-atomfed-server-%d.fed-atomfed-server-headless.atomfed.svc.cluster.local", j), ip(j))
			}
			if flag, val, ok := strings.Cut(a, "="); ok {
				best := ""
				for path := range mounts {
					if (val == path || strings.HasPrefix(val, path+"/")) && len(path) > len(best) {
						best = path
					}
				}
				if best != "" {
					a = flag + "=" + mounts[best] + strings.TrimPrefix(val, best)
				}
			}
			return a
		}
		var argv []string
		for _, a := range c.Args {
			argv = append(argv, rewrite(a))
		}
		p := &proc{cmd: exec.Command(atomfedBin, argv...), log: &bytes.Buffer{}, done: make(chan error, 1)}
		p.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + root}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
				p.cmd.Env = append(p.cmd.Env, e.Name+"="+env[map[string]string{"metadata.name": "POD_NAME", "metadata.namespace": "POD_NAMESPACE", "status.podIP": "POD_IP"}[e.ValueFrom.FieldRef.FieldPath]])
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				p.cmd.Env = append(p.cmd.Env, e.Name+"="+strings.TrimSpace(string(secretValue(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key))))
			default:
				p.cmd.Env = append(p.cmd.Env, e.Name+"="+e.Value)
			}
		}
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.done <- p.cmd.Wait() }()
		t.Cleanup(func() {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			if t.Failed() {
				t.Logf("%s:\n%s", name, p.log)
			}
		})
		procs = append(procs, p)
	}
	// The rendered readiness probe, against each pod.
	probe := func(i int, pr *corev1.Probe) int {
		port := http1
		resp, err := http.Get(fmt.Sprintf("%s://%s:%d%s", strings.ToLower(string(pr.HTTPGet.Scheme)), ip(i), port, pr.HTTPGet.Path))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 3; {
		if probe(i, c.ReadinessProbe) == http.StatusOK {
			i++
			continue
		}
		for j, p := range procs {
			select {
			case err := <-p.done:
				t.Fatalf("pod %d exited: %v", j, err)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %d is not ready after 60 s (readiness probe %s)", i, c.ReadinessProbe.HTTPGet.Path)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range 3 {
		if s := probe(i, c.LivenessProbe); s != http.StatusOK {
			t.Errorf("pod %d liveness: %d", i, s)
		}
	}
	// Deleting a pod: SIGTERM, then SIGKILL after the grace period.
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	start := time.Now()
	_ = procs[1].cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-procs[1].done:
		if err != nil || !strings.Contains(procs[1].log.String(), "left the cluster") {
			t.Errorf("pod 1 after SIGTERM: %v", err)
		}
		t.Logf("pod 1 left in %s (grace period %s)", time.Since(start).Round(time.Millisecond), grace)
	case <-time.After(grace):
		t.Fatalf("pod 1 did not stop within its grace period %s", grace)
	}
}
