package deploy_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// variants are the value sets every chart test renders: the defaults and
// the chart's ci/ examples.
var variants = []string{"", "federation-values.yaml", "existing-secrets-values.yaml", "components-off-values.yaml"}

func variantValues(t *testing.T, name string) map[string]any {
	if name == "" {
		return nil
	}
	return valuesFile(t, name)
}

// TestChartLints: `helm lint` (the SDK's) finds nothing at warning level
// or above, for the defaults and each example.
func TestChartLints(t *testing.T) {
	for _, v := range variants {
		res := lint.RunAll(chartDir, variantValues(t, v), "atomfed", lint.WithKubeVersion(kubeVersion(t)))
		if len(res.Messages) == 0 {
			t.Fatalf("lint %q: no message at all, not even the chart's INFO: did lint run?", v)
		}
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("lint %q: %s", v, m.Error())
			}
		}
	}
}

// secretName matches environment variables that hold secrets: they must
// come from a Secret (valueFrom), never as a literal.
var secretName = regexp.MustCompile(`TOKEN|PASSWORD|SECRET|DSN|REDIS_URL|PRIVATE|CREDENTIAL`)

// checkCommon asserts what must hold for every rendering: non-root pods
// without privileges, a read-only root, no secret literal in any
// environment or ConfigMap, no Secret rendered by the chart itself, and no
// service-account token mounted but in the secrets job.
func checkCommon(t *testing.T, name string, r rendered) {
	t.Helper()
	if s := r.all("Secret"); len(s) > 0 {
		t.Errorf("%s: the chart renders a Secret (%s): secrets come from existing Secrets or the one-time job only", name, s[0].Name)
	}
	for wl, pod := range podSpecs(r) {
		sc := pod.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
			sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s %s: pod securityContext %+v: want non-root, a non-zero user, RuntimeDefault seccomp", name, wl, sc)
		}
		// Secret files: readable by the pod's group (fsGroup, the user's
		// group), by no one else.
		for _, v := range pod.Volumes {
			if v.Secret != nil && v.Secret.DefaultMode != nil && (*v.Secret.DefaultMode&0o040 == 0 || *v.Secret.DefaultMode&0o007 != 0) {
				t.Errorf("%s %s: secret volume %s has mode %o: want group-readable (fsGroup), nothing for others", name, wl, v.Name, *v.Secret.DefaultMode)
			}
		}
		if sc != nil && (sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup) {
			t.Errorf("%s %s: fsGroup %v, runAsGroup %v: the volumes must belong to the user's group", name, wl, sc.FSGroup, sc.RunAsGroup)
		}
		isJob := strings.HasPrefix(wl, "Job/")
		if auto := pod.AutomountServiceAccountToken; auto == nil || *auto != isJob {
			t.Errorf("%s %s: automountServiceAccountToken %v (only the secrets job talks to the Kubernetes API)", name, wl, auto)
		}
		for _, c := range pod.Containers {
			cs := c.SecurityContext
			if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
				cs.Capabilities == nil || !slices.Contains(cs.Capabilities.Drop, "ALL") {
				t.Errorf("%s %s/%s: container securityContext %+v: want no privilege escalation, a read-only root, all capabilities dropped", name, wl, c.Name, cs)
			}
			for _, e := range c.Env {
				if secretName.MatchString(e.Name) && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
					t.Errorf("%s %s/%s: env %s is not taken from a Secret: %+v", name, wl, c.Name, e.Name, e)
				}
			}
			if c.Image == "" || c.Resources.Requests == nil {
				t.Errorf("%s %s/%s: image %q, requests %v", name, wl, c.Name, c.Image, c.Resources.Requests)
			}
		}
	}
	for _, d := range r.all("ConfigMap") {
		for _, bad := range []string{"PRIVATE KEY", "atf_", "password", "BEGIN CERTIFICATE"} {
			if strings.Contains(string(d.Raw), bad) {
				t.Errorf("%s: ConfigMap %s holds %q", name, d.Name, bad)
			}
		}
	}
}

func container(t *testing.T, pod *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func envOf(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func argOf(c *corev1.Container, flag string) (string, bool) {
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
		if a == flag {
			return "", true
		}
	}
	return "", false
}

// checkServers asserts the servers' StatefulSet, Services and PDB for n
// voters.
func checkServers(t *testing.T, r rendered, n int) {
	t.Helper()
	sts := r.one(t, "StatefulSet", "fed-atomfed-server").(*appsv1.StatefulSet)
	if *sts.Spec.Replicas != int32(n) || sts.Spec.ServiceName != "fed-atomfed-server-headless" || sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("statefulset: replicas %d, serviceName %s, policy %s", *sts.Spec.Replicas, sts.Spec.ServiceName, sts.Spec.PodManagementPolicy)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().IsZero() {
		t.Errorf("statefulset: want one PVC per server: %+v", sts.Spec.VolumeClaimTemplates)
	}
	pod := &sts.Spec.Template.Spec
	// The graceful leave is bounded by 15 s (cmd/atomfed, runUntilSignal):
	// Kubernetes must not SIGKILL before.
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= 15 {
		t.Errorf("terminationGracePeriodSeconds %v: must exceed the 15 s leave bound", g)
	}
	c := container(t, pod, "server")
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health?ready" || p.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Errorf("readiness probe %+v: want GET /health?ready over HTTP", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health" {
		t.Errorf("liveness probe %+v: want GET /health", p)
	}
	if v, _ := argOf(c, "--bootstrap-expect"); v != strconv.Itoa(n) {
		t.Errorf("--bootstrap-expect=%s, want %d", v, n)
	}
	if v, _ := argOf(c, "--join"); len(strings.Split(v, ",")) != n || !strings.Contains(v, "fed-atomfed-server-0.fed-atomfed-server-headless.atomfed.svc.cluster.local:8301") {
		t.Errorf("--join=%s: want the %d servers' headless names", v, n)
	}
	if e := envOf(c, "FEDERATION_TOKEN"); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("FEDERATION_TOKEN: %+v", e)
	}
	ts := pod.TopologySpreadConstraints
	if len(ts) != 1 || ts[0].TopologyKey != "topology.kubernetes.io/zone" || ts[0].MaxSkew != 1 {
		t.Errorf("topology spread %+v: want max skew 1 over zones", ts)
	}
	aa := pod.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "kubernetes.io/hostname" ||
		len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "topology.kubernetes.io/zone" {
		t.Errorf("anti-affinity %+v: want never two servers on a host, preferably one per zone", aa)
	}
	hl := r.one(t, "Service", "fed-atomfed-server-headless").(*corev1.Service)
	if hl.Spec.ClusterIP != corev1.ClusterIPNone || !hl.Spec.PublishNotReadyAddresses {
		t.Errorf("headless service: clusterIP %q, publishNotReadyAddresses %v", hl.Spec.ClusterIP, hl.Spec.PublishNotReadyAddresses)
	}
	ports := map[string]int32{}
	for _, p := range hl.Spec.Ports {
		ports[p.Name] = p.Port
	}
	if ports["raft"] != 8300 || ports["serf-tcp"] != 8301 || ports["serf-udp"] != 8301 {
		t.Errorf("headless ports %v: want raft and serf (tcp, udp)", ports)
	}
	api := r.one(t, "Service", "fed-atomfed").(*corev1.Service)
	if len(api.Spec.Ports) != 1 || api.Spec.Ports[0].Port != 8401 || api.Spec.PublishNotReadyAddresses {
		t.Errorf("client service: %+v", api.Spec)
	}
	pdb := r.one(t, "PodDisruptionBudget", "fed-atomfed-server").(*policyv1.PodDisruptionBudget)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != n/2+1 {
		t.Errorf("PDB minAvailable %v: want the quorum of %d, %d", pdb.Spec.MinAvailable, n, n/2+1)
	}
}

func agentDeployments(r rendered) map[string]*appsv1.Deployment {
	out := map[string]*appsv1.Deployment{}
	for _, d := range r.all("Deployment") {
		dep := d.Obj.(*appsv1.Deployment)
		if dep.Spec.Template.Labels["app.kubernetes.io/component"] == "agent" {
			out[dep.Spec.Template.Labels["atomfed.io/region"]] = dep
		}
	}
	return out
}

// TestChartDefaults: three servers, the one-time secrets job for all
// three Secrets, no agent (none is listed), no edge.
func TestChartDefaults(t *testing.T) {
	r := mustRender(t, nil)
	checkCommon(t, "defaults", r)
	checkServers(t, r, 3)
	if len(agentDeployments(r)) != 0 || len(r.all("ServiceMonitor")) != 0 || len(r.all("ConfigMap")) != 0 {
		t.Errorf("defaults render agents, a ServiceMonitor or a dashboard")
	}
	job := r.one(t, "Job", "fed-atomfed-secrets-init").(*batchv1.Job)
	c := container(t, &job.Spec.Template.Spec, "secrets-init")
	for flag, want := range map[string]string{"--tls-secret": "fed-atomfed-tls", "--gossip-secret": "fed-atomfed-gossip", "--token-secret": "fed-atomfed-bootstrap-token"} {
		if v, _ := argOf(c, flag); v != want {
			t.Errorf("job %s=%q, want %q", flag, v, want)
		}
	}
	names, _ := argOf(c, "--server-name")
	for _, want := range []string{"fed-atomfed-server-0", "fed-atomfed-server-4", "fed-atomfed.atomfed.svc.cluster.local", "fed-atomfed-server-2.fed-atomfed-server-headless.atomfed.svc.cluster.local"} {
		if !slices.Contains(strings.Split(names, ","), want) {
			t.Errorf("the server certificate would not name %s: %s", want, names)
		}
	}
	if job.Annotations["helm.sh/hook"] != "pre-install" {
		t.Errorf("the secrets job runs on %q, want pre-install only", job.Annotations["helm.sh/hook"])
	}
}

// TestChartFederation: 5 servers, an agent in each of 3 regions with its
// database DSN, PROM_URL and S3_ENDPOINT, the edge, the ServiceMonitor and
// the dashboard.
func TestChartFederation(t *testing.T) {
	r := mustRender(t, valuesFile(t, "federation-values.yaml"))
	checkCommon(t, "federation", r)
	checkServers(t, r, 5)
	agents := agentDeployments(r)
	if len(agents) != 3 {
		t.Fatalf("%d agent deployments, want 3", len(agents))
	}
	for region, dep := range agents {
		if *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("%s: replicas %d, strategy %s: one pod per node name, never two at once", region, *dep.Spec.Replicas, dep.Spec.Strategy.Type)
		}
		c := container(t, &dep.Spec.Template.Spec, "agent")
		if v, _ := argOf(c, "--region"); v != region {
			t.Errorf("%s: --region=%s", region, v)
		}
		if _, off := argOf(c, "--disable-task-types"); off {
			t.Errorf("%s: every component is on, yet task types are disabled", region)
		}
		if e := envOf(c, "POSTGRES_DSN"); e == nil || e.ValueFrom.SecretKeyRef.Name != "atomfed-pg-"+region {
			t.Errorf("%s: POSTGRES_DSN %+v", region, e)
		}
		if e := envOf(c, "FEDERATION_TOKEN"); e == nil || e.ValueFrom.SecretKeyRef.Name != "atomfed-agent-"+region {
			t.Errorf("%s: FEDERATION_TOKEN %+v", region, e)
		}
		if dep.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim == nil {
			t.Errorf("%s: the agent's key and state are not on a volume", region)
		}
	}
	// The leader ships control-plane snapshots to the bucket, with the
	// credentials from their Secret, never from a value.
	srv := container(t, &r.one(t, "StatefulSet", "fed-atomfed-server").(*appsv1.StatefulSet).Spec.Template.Spec, "server")
	if e := envOf(srv, "S3_ENDPOINT"); e == nil || e.Value != "https://s3.us-east-1.amazonaws.com" {
		t.Errorf("servers' S3_ENDPOINT %+v", e)
	}
	if e := envOf(srv, "S3_BUCKET"); e == nil || e.Value != "atomfed-controlplane" {
		t.Errorf("servers' S3_BUCKET %+v", e)
	}
	for _, n := range []string{"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} {
		if e := envOf(srv, n); e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "atomfed-s3-controlplane" {
			t.Errorf("servers' %s %+v, want it from Secret atomfed-s3-controlplane", n, e)
		}
	}
	us := container(t, &agents["us-east"].Spec.Template.Spec, "agent")
	if e := envOf(us, "PROM_URL"); e == nil || e.Value != "http://prometheus.monitoring.svc:9090" {
		t.Errorf("PROM_URL %+v", e)
	}
	if e := envOf(us, "S3_ENDPOINT"); e == nil || e.Value != "https://s3.us-east-1.amazonaws.com" {
		t.Errorf("S3_ENDPOINT %+v", e)
	}
	if e := envOf(us, "S3_BUCKET"); e == nil || e.Value != "atomfed-backups-us-east" {
		t.Errorf("S3_BUCKET %+v", e)
	}
	// The S3 credentials and the repository passphrase come from the
	// region's Secret, never from a value.
	for _, n := range []string{"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "ATOMFED_BACKUP_CIPHER_PASS"} {
		if e := envOf(us, n); e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "atomfed-s3-us-east" {
			t.Errorf("%s %+v, want it from Secret atomfed-s3-us-east", n, e)
		}
	}
	if v, _ := argOf(us, "--replication-passfile"); v != "/etc/atomfed/replication/pgpass" {
		t.Errorf("--replication-passfile=%s", v)
	}
	if e := envOf(container(t, &agents["ap-south"].Spec.Template.Spec, "agent"), "PROM_URL"); e != nil {
		t.Errorf("ap-south has no promURL, yet PROM_URL=%+v", e)
	}
	if v, _ := argOf(container(t, &agents["ap-south"].Spec.Template.Spec, "agent"), "--node"); v != "ap-south-agent" {
		t.Errorf("ap-south --node=%s", v)
	}
	if len(r.all("PersistentVolumeClaim")) != 3 {
		t.Errorf("%d agent PVCs, want 3", len(r.all("PersistentVolumeClaim")))
	}
	edge := r.one(t, "Deployment", "fed-atomfed-edge").(*appsv1.Deployment)
	ec := container(t, &edge.Spec.Template.Spec, "edge")
	if v, _ := argOf(ec, "--addr"); v != "https://fed-atomfed.atomfed.svc.cluster.local:8401" {
		t.Errorf("edge --addr=%s", v)
	}
	if e := envOf(ec, "REDIS_URL"); e == nil || e.ValueFrom.SecretKeyRef.Name != "atomfed-edge-redis" {
		t.Errorf("edge REDIS_URL %+v", e)
	}
	r.one(t, "Service", "fed-atomfed-edge")
	sm := r.one(t, "ServiceMonitor", "fed-atomfed-server").(*serviceMonitor)
	if ep := sm.Spec.Endpoints[0]; ep.Scheme != "https" || ep.Authorization == nil || ep.Authorization.Credentials.Name != "atomfed-prometheus-token" || ep.TLSConfig.ServerName != "server.atomfed" {
		t.Errorf("servicemonitor endpoint %+v", ep)
	}
	// The ServiceMonitor selects exactly one Service per pod: the headless one.
	var matched []string
	for _, d := range r.all("Service") {
		svc := d.Obj.(*corev1.Service)
		match := true
		for k, v := range sm.Spec.Selector.MatchLabels {
			match = match && svc.Labels[k] == v
		}
		if match {
			matched = append(matched, svc.Name)
		}
	}
	if !slices.Equal(matched, []string{"fed-atomfed-server-headless"}) {
		t.Errorf("the ServiceMonitor selects %v: want the headless Service alone (each pod scraped once)", matched)
	}
	rule := r.one(t, "PrometheusRule", "fed-atomfed").(*prometheusRule)
	alerts := 0
	for _, g := range rule.Spec.Groups {
		for _, a := range g.Rules {
			alerts++
			if !strings.Contains(a.Expr, `job="fed-atomfed-server-headless"`) || a.Labels["severity"] == "" || a.Annotations["summary"] == "" {
				t.Errorf("alert %s: expr %q, labels %v", a.Alert, a.Expr, a.Labels)
			}
		}
	}
	if alerts < 5 {
		t.Errorf("%d alerts", alerts)
	}
	cm := r.one(t, "ConfigMap", "fed-atomfed-dashboard").(*corev1.ConfigMap)
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["atomfed.json"]), &dash); err != nil || len(dash.Panels) < 10 {
		t.Errorf("dashboard: %v, %d panels", err, len(dash.Panels))
	}
	sts := r.one(t, "StatefulSet", "fed-atomfed-server").(*appsv1.StatefulSet)
	sc := container(t, &sts.Spec.Template.Spec, "server")
	if e := envOf(sc, "COSIGN_PASSWORD"); e == nil || e.ValueFrom.SecretKeyRef.Name != "atomfed-server-signing" {
		t.Errorf("COSIGN_PASSWORD %+v", e)
	}
	if v, _ := argOf(sc, "--raft-multiplier"); v != "3" {
		t.Errorf("--raft-multiplier=%s", v)
	}
}

// TestChartComponentsOff: with federation sync, the tenant replicator
// (and with it a switchover's steps), the metrics aggregator and the DR
// coordinator off, agents run without their task types and get no PROM_URL
// or S3_ENDPOINT; no edge.
func TestChartComponentsOff(t *testing.T) {
	r := mustRender(t, valuesFile(t, "components-off-values.yaml"))
	checkCommon(t, "components off", r)
	c := container(t, &agentDeployments(r)["us-east"].Spec.Template.Spec, "agent")
	v, _ := argOf(c, "--disable-task-types")
	if got := strings.Split(v, ","); !slices.Equal(got, []string{"global-publisher", "global-subscriber", "tenant-publisher", "tenant-subscriber", "sync-standby",
		"tenant-fence", "tenant-catchup", "tenant-promote", "tenant-detach", "metrics", "backup", "restore-drill", "region-rebuild"}) {
		t.Errorf("--disable-task-types=%s", v)
	}
	if envOf(c, "PROM_URL") != nil || envOf(c, "S3_ENDPOINT") != nil {
		t.Errorf("switched-off components still get PROM_URL or S3_ENDPOINT: %+v", c.Env)
	}
	// With the DR coordinator off the servers ship no snapshot either.
	srv := container(t, &r.one(t, "StatefulSet", "fed-atomfed-server").(*appsv1.StatefulSet).Spec.Template.Spec, "server")
	if _, on := argOf(srv, "--snapshot-repo"); on || envOf(srv, "S3_ENDPOINT") != nil {
		t.Errorf("the DR coordinator is off, yet the servers get a snapshot repository: %v %+v", srv.Args, srv.Env)
	}
	for _, d := range r.all("Deployment") {
		if strings.HasSuffix(d.Name, "-edge") {
			t.Errorf("the edge is deployed")
		}
	}
	if len(r.all("PersistentVolumeClaim")) != 0 {
		t.Errorf("agents.persistence.enabled false still renders PVCs")
	}
	// One component at a time: federation sync off alone.
	r = mustRender(t, map[string]any{
		"components": map[string]any{"federationSync": map[string]any{"enabled": false}},
		"agents":     map[string]any{"regions": []any{map[string]any{"name": "us-east", "tokenSecret": map[string]any{"name": "t"}}}},
	})
	c = container(t, &agentDeployments(r)["us-east"].Spec.Template.Spec, "agent")
	if v, _ := argOf(c, "--disable-task-types"); v != "global-publisher,global-subscriber" {
		t.Errorf("federation sync off: --disable-task-types=%s", v)
	}
}

// TestChartExistingSecrets: Secrets named in values are used as they are,
// and no job, role or service account is made to create any.
func TestChartExistingSecrets(t *testing.T) {
	r := mustRender(t, valuesFile(t, "existing-secrets-values.yaml"))
	checkCommon(t, "existing secrets", r)
	checkServers(t, r, 3)
	if len(r.all("Job")) != 0 || len(r.all("Role")) != 0 {
		t.Errorf("a secrets job is rendered although every Secret exists")
	}
	sts := r.one(t, "StatefulSet", "fed-atomfed-server").(*appsv1.StatefulSet)
	vols := map[string]string{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			vols[v.Name] = v.Secret.SecretName
		}
	}
	if vols["tls"] != "corp-atomfed-tls" || vols["gossip"] != "corp-atomfed-gossip" {
		t.Errorf("server secret volumes %v", vols)
	}
	if e := envOf(container(t, &sts.Spec.Template.Spec, "server"), "FEDERATION_TOKEN"); e.ValueFrom.SecretKeyRef.Name != "corp-atomfed-bootstrap" {
		t.Errorf("FEDERATION_TOKEN from %s", e.ValueFrom.SecretKeyRef.Name)
	}
	// One Secret existing, two made: the job makes only the missing ones.
	r = mustRender(t, map[string]any{"secrets": map[string]any{"tls": map[string]any{"existingSecret": "corp-tls"}}})
	c := container(t, &r.one(t, "Job", "fed-atomfed-secrets-init").(*batchv1.Job).Spec.Template.Spec, "secrets-init")
	if _, ok := argOf(c, "--tls-secret"); ok {
		t.Errorf("the job makes a TLS Secret although corp-tls exists: %v", c.Args)
	}
	if v, _ := argOf(c, "--gossip-secret"); v != "fed-atomfed-gossip" {
		t.Errorf("--gossip-secret=%s", v)
	}
}

// expandK8s expands $(VAR) in an argument as the kubelet does.
func expandK8s(arg string, env map[string]string) string {
	return regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(arg, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// TestChartFlagsParseInTheBinary: every rendered container's arguments
// (servers, agents, edge, the secrets job), with the kubelet's $(VAR)
// expansion, are accepted by the flag parser of the atomfed binary itself
// (cobra parses every flag before it looks at --help, so an unknown flag or
// a bad value fails); an extra argument the binary does not know fails.
func TestChartFlagsParseInTheBinary(t *testing.T) {
	env := map[string]string{"POD_NAME": "fed-atomfed-server-0", "POD_NAMESPACE": "atomfed", "POD_IP": "10.1.2.3"}
	check := func(name string, r rendered) (failures []string) {
		for wl, pod := range podSpecs(r) {
			for _, c := range pod.Containers {
				args := []string{}
				for _, a := range c.Args {
					args = append(args, expandK8s(a, env))
				}
				out, err := exec.Command(atomfedBin, append(args, "--help")...).CombinedOutput()
				if err != nil {
					failures = append(failures, name+" "+wl+": "+strings.TrimSpace(string(out)))
				}
			}
		}
		return failures
	}
	for _, v := range variants {
		for _, f := range check(v, mustRender(t, variantValues(t, v))) {
			t.Error(f)
		}
	}
	bad := check("bad", mustRender(t, map[string]any{"server": map[string]any{"extraArgs": []any{"--no-such-flag=1"}}}))
	if len(bad) != 1 || !strings.Contains(bad[0], "unknown flag: --no-such-flag") {
		t.Errorf("an unknown server flag was not refused by the binary: %v", bad)
	}
}

// TestChartRejectsBadValues: values the schema or the chart's checks
// forbid fail to render, with a message that names the value and what to
// do.
func TestChartRejectsBadValues(t *testing.T) {
	region := func(extra map[string]any) map[string]any {
		r := map[string]any{"name": "us-east", "tokenSecret": map[string]any{"name": "tok"}}
		for k, v := range extra {
			r[k] = v
		}
		return map[string]any{"regions": []any{r}}
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   []string
	}{
		{"four servers", map[string]any{"server": map[string]any{"replicas": 4}}, []string{"/server/replicas", "3", "5"}},
		{"a misspelt section", map[string]any{"sever": map[string]any{"replicas": 3}}, []string{"sever", "not allowed"}},
		{"a region name that is no DNS label", map[string]any{"agents": map[string]any{"regions": []any{map[string]any{"name": "US_East", "tokenSecret": map[string]any{"name": "t"}}}}}, []string{"/agents/regions/0/name", "US_East"}},
		{"an agent without its token", map[string]any{"agents": map[string]any{"regions": []any{map[string]any{"name": "us-east"}}}}, []string{"/agents/regions/0", "tokenSecret"}},
		{"a token as an env literal", map[string]any{"server": map[string]any{"extraEnv": []any{map[string]any{"name": "FEDERATION_TOKEN", "value": "atf_leak"}}}}, []string{"/server/extraEnv/0", "valueFrom"}},
		{"a grace period shorter than the leave", map[string]any{"server": map[string]any{"terminationGracePeriodSeconds": 10}}, []string{"/server/terminationGracePeriodSeconds", "20"}},
		{"a bad digest", map[string]any{"image": map[string]any{"digest": "sha256:abc"}}, []string{"/image/digest"}},
		{"credentials in PROM_URL", map[string]any{"agents": region(map[string]any{"promURL": "http://admin:pw@prom:9090"})}, []string{"/agents/regions/0/promURL"}},
		{"registry off", map[string]any{"components": map[string]any{"registry": map[string]any{"enabled": false}}}, []string{"components.registry.enabled", "cannot be switched off"}},
		{"policy manager off", map[string]any{"components": map[string]any{"policyManager": map[string]any{"enabled": false}}}, []string{"components.policyManager.enabled", "cannot be switched off"}},
		{"no secrets and no job", map[string]any{"secrets": map[string]any{"generate": false}}, []string{"secrets.generate", "existingSecret"}},
		{"the edge without a token", map[string]any{"components": map[string]any{"edgeController": map[string]any{"enabled": true}}}, []string{"edge.tokenSecret.name", "reader token"}},
		{"two agents with one node name", map[string]any{"agents": map[string]any{"regions": []any{
			map[string]any{"name": "us-east", "node": "a1", "tokenSecret": map[string]any{"name": "t1"}},
			map[string]any{"name": "eu-west", "node": "a1", "tokenSecret": map[string]any{"name": "t2"}}}}}, []string{`node "a1" appears twice`}},
	} {
		_, err := render(t, tc.values)
		if err == nil {
			t.Errorf("%s: rendered", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: the message lacks %q: %v", tc.name, w, err)
			}
		}
	}
}

// TestChartMetricsExist: every atomfed_* series the dashboard and the alert
// rules query is one the binary exports (its name appears in the main
// module's Go sources; histogram suffixes aside), so a renamed metric
// cannot leave a dead panel or an alert that never fires.
func TestChartMetricsExist(t *testing.T) {
	var src strings.Builder
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "deploy" || d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	code := src.String()
	r := mustRender(t, valuesFile(t, "federation-values.yaml"))
	var queried string
	for _, kind := range []string{"ConfigMap", "PrometheusRule"} {
		for _, d := range r.all(kind) {
			queried += string(d.Raw)
		}
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`atomfed_[a-z_]+`).FindAllString(queried, -1) {
		names[regexp.MustCompile(`_(bucket|sum|count)$`).ReplaceAllString(m, "")] = true
	}
	if len(names) < 15 {
		t.Fatalf("only %d metric names found in the dashboard and rules: %v", len(names), names)
	}
	for n := range names {
		if !strings.Contains(code, `"`+n+`"`) {
			t.Errorf("%s is queried by the dashboard or an alert, but atomfed exports no such metric", n)
		}
	}
}

// TestChartReadmeCoversEveryComponent: each component values.yaml can
// switch has its own section in the chart's README, and each README section
// names a component the values have.
func TestChartReadmeCoversEveryComponent(t *testing.T) {
	defaults := valuesFileAt(t, chartDir+"/values.yaml")
	comps, _ := defaults["components"].(map[string]any)
	readme, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := regexp.MustCompile("(?m)^### .*`components\\.([A-Za-z]+)`$").FindAllStringSubmatch(string(readme), -1)
	have := map[string]bool{}
	for _, m := range sections {
		have[m[1]] = true
		if _, ok := comps[m[1]]; !ok {
			t.Errorf("the README has a section for components.%s, which values.yaml does not have", m[1])
		}
	}
	for c := range comps {
		if !have[c] {
			t.Errorf("components.%s has no section in the chart's README", c)
		}
	}
	if len(comps) != 7 {
		t.Errorf("%d components in values.yaml, want the seven seed components", len(comps))
	}
}
