package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

const chartDir = "helm/atomfed"

// manifest is one rendered document, decoded strictly into its type.
type manifest struct {
	Kind, Name, Source string
	Obj                any
	Raw                []byte
}

// rendered is what `helm template` makes of the chart for some values.
type rendered struct {
	docs []manifest
}

func (r rendered) all(kind string) []manifest {
	var out []manifest
	for _, d := range r.docs {
		if d.Kind == kind {
			out = append(out, d)
		}
	}
	return out
}

func (r rendered) one(t *testing.T, kind, name string) any {
	t.Helper()
	for _, d := range r.docs {
		if d.Kind == kind && d.Name == name {
			return d.Obj
		}
	}
	var have []string
	for _, d := range r.docs {
		have = append(have, d.Kind+"/"+d.Name)
	}
	t.Fatalf("no %s/%s rendered; have %v", kind, name, have)
	return nil
}

// serviceMonitor is the part of the Prometheus Operator's type the chart
// uses (the CRD's Go types are not in k8s.io/api); decoding is strict, so
// a field the chart sets that is not here fails the test.
type serviceMonitor struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   metav1ObjectMeta   `json:"metadata"`
	Spec       serviceMonitorSpec `json:"spec"`
}

type metav1ObjectMeta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type serviceMonitorSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	NamespaceSelector struct {
		MatchNames []string `json:"matchNames"`
	} `json:"namespaceSelector"`
	Endpoints []struct {
		Port          string `json:"port"`
		Path          string `json:"path"`
		Interval      string `json:"interval"`
		Scheme        string `json:"scheme"`
		Authorization *struct {
			Type        string                   `json:"type"`
			Credentials corev1.SecretKeySelector `json:"credentials"`
		} `json:"authorization,omitempty"`
		TLSConfig *struct {
			ServerName string `json:"serverName"`
			CA         struct {
				Secret corev1.SecretKeySelector `json:"secret"`
			} `json:"ca"`
		} `json:"tlsConfig,omitempty"`
	} `json:"endpoints"`
}

// prometheusRule is the part of the Prometheus Operator's type the chart
// uses, decoded strictly like serviceMonitor.
type prometheusRule struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   metav1ObjectMeta `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// newObject returns the Kubernetes API type of a rendered kind.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "batch/v1 Job":
		return &batchv1.Job{}, nil
	case "rbac.authorization.k8s.io/v1 Role":
		return &rbacv1.Role{}, nil
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		return &rbacv1.RoleBinding{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &serviceMonitor{}, nil
	case "monitoring.coreos.com/v1 PrometheusRule":
		return &prometheusRule{}, nil
	}
	return nil, fmt.Errorf("the chart renders %s %s, which this test does not know: add its type", apiVersion, kind)
}

// render does what `helm template --namespace atomfed fed deploy/helm/atomfed -f values`
// does, with Helm's Go SDK (its chart loader, values coalescing with the
// schema check, and template engine; not pkg/action, which would compile a
// Kubernetes client in), and decodes every document strictly.
func render(t *testing.T, values map[string]any) (rendered, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kubeVersion(t)
	vals, err := util.ToRenderValuesWithSchemaValidation(ch, values, common.ReleaseOptions{Name: "fed", Namespace: "atomfed", Revision: 1, IsInstall: true}, caps, false)
	if err != nil {
		return rendered{}, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return rendered{}, err
	}
	var text string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(path.Base(name), "_") {
			continue
		}
		text += "\n---\n# Source: " + name + "\n" + files[name]
	}
	var out rendered
	source := ""
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(text, -1) {
		if m := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(doc); m != nil {
			source = m[1]
		}
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s: not YAML: %v\n%s", source, err, doc)
		}
		obj, err := newObject(head.APIVersion, head.Kind)
		if err != nil {
			t.Fatalf("%s: %v", source, err)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly into its API type: %v\n%s", source, head.Kind, head.Metadata.Name, err, doc)
		}
		out.docs = append(out.docs, manifest{Kind: head.Kind, Name: head.Metadata.Name, Source: source, Obj: obj, Raw: []byte(doc)})
	}
	sort.SliceStable(out.docs, func(i, j int) bool { return out.docs[i].Kind < out.docs[j].Kind })
	return out, nil
}

func kubeVersion(t *testing.T) *common.KubeVersion {
	t.Helper()
	kv, err := common.ParseKubeVersion("v1.31.0")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func mustRender(t *testing.T, values map[string]any) rendered {
	t.Helper()
	r, err := render(t, values)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

// valuesFile reads one of the chart's ci/ example files.
func valuesFile(t *testing.T, name string) map[string]any {
	t.Helper()
	return valuesFileAt(t, chartDir+"/ci/"+name)
}

func valuesFileAt(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// podSpecs returns every pod template the chart renders, by workload.
func podSpecs(r rendered) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, d := range r.docs {
		switch o := d.Obj.(type) {
		case *appsv1.StatefulSet:
			out["StatefulSet/"+d.Name] = &o.Spec.Template.Spec
		case *appsv1.Deployment:
			out["Deployment/"+d.Name] = &o.Spec.Template.Spec
		case *batchv1.Job:
			out["Job/"+d.Name] = &o.Spec.Template.Spec
		}
	}
	return out
}
