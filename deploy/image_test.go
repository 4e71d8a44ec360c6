package deploy_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/atomcloud/atomfed/deploy/image"
)

// imageFile is one file of the image's layer.
type imageFile struct {
	hdr  *tar.Header
	body []byte
}

// buildImageTarball builds the image from the test binary as `make image`
// does, writes the tarball and reads it back.
func buildImageTarball(t *testing.T, dir string) (v1.Image, map[string]imageFile, string) {
	t.Helper()
	const ref = image.DefaultRepository + ":0.1.0"
	img, err := image.Build(image.Options{Binary: atomfedBin, Version: testVersion, Revision: "abc123", Created: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "atomfed-image.tar")
	if err := image.WriteArchive(path, ref, img); err != nil {
		t.Fatal(err)
	}
	// The OCI layout: index.json names the image and points at its OCI
	// manifest, stored under its digest.
	entries := readTar(t, path)
	var index struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(entries["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v: %s", err, entries["index.json"])
	}
	d, _ := img.Digest()
	m := index.Manifests[0]
	if m.MediaType != string(types.OCIManifestSchema1) || m.Digest != d.String() || m.Annotations["io.containerd.image.name"] != ref ||
		string(entries["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("OCI layout: index %+v, oci-layout %s; want %s of %s", index, entries["oci-layout"], d, ref)
	}
	if sum := sha256.Sum256(entries["blobs/sha256/"+d.Hex]); hex.EncodeToString(sum[:]) != d.Hex {
		t.Errorf("the manifest blob does not have its digest")
	}
	// The docker-save view of the same tar (docker load, crane, kind).
	tag, _ := name.NewTag(ref)
	back, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("the archive does not load as %s through manifest.json: %v", ref, err)
	}
	if bd, _ := back.ConfigName(); bd != mustConfigName(t, img) {
		t.Errorf("manifest.json names config %s, the image has %s", bd, mustConfigName(t, img))
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v: want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files["/"+strings.TrimSuffix(h.Name, "/")] = imageFile{h, b}
	}
	return img, files, path
}

func mustConfigName(t *testing.T, img v1.Image) v1.Hash {
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// readTar returns every regular file of a tar by name.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

// TestImageTarball: the image `make image` writes loads from its tarball
// under its name; its config runs the static binary as the non-root user
// with no shell in the image; the binary in the layer is byte for byte the
// one built (its digest), and, extracted and executed, reports its
// version; building again gives the same digest.
func TestImageTarball(t *testing.T) {
	dir := t.TempDir()
	img, files, _ := buildImageTarball(t, dir)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/atomfed"}) || c.WorkingDir != "/home/nonroot" {
		t.Errorf("config: user %q, entrypoint %v, workdir %q", c.User, c.Entrypoint, c.WorkingDir)
	}
	if cf.OS != "linux" || cf.Architecture == "" || c.Labels["org.opencontainers.image.version"] != testVersion {
		t.Errorf("config: %s/%s, labels %v", cf.OS, cf.Architecture, c.Labels)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", mt)
	}
	for p, f := range files {
		if strings.HasPrefix(p, "/bin") || strings.HasPrefix(p, "/sbin") || strings.HasSuffix(p, "/sh") || strings.HasSuffix(p, "bash") {
			t.Errorf("the image holds %s: it must have no shell", p)
		}
		if f.hdr.Typeflag == tar.TypeReg && f.hdr.Mode&0o6000 != 0 {
			t.Errorf("%s is setuid/setgid", p)
		}
	}
	bin, ok := files["/usr/local/bin/atomfed"]
	if !ok {
		t.Fatalf("no /usr/local/bin/atomfed in the layer: %v", slices.Sorted(mapsKeys(files)))
	}
	if bin.hdr.Uid != 0 || bin.hdr.Mode&0o022 != 0 {
		t.Errorf("the binary is owned by %d, mode %o: the runtime user must not be able to replace it", bin.hdr.Uid, bin.hdr.Mode)
	}
	want, err := os.ReadFile(atomfedBin)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(bin.body) != sha256.Sum256(want) {
		t.Errorf("the layer's binary has digest %x, the build %x", sha256.Sum256(bin.body), sha256.Sum256(want))
	}
	for _, d := range image.StateDirs {
		if f := files[d]; f.hdr == nil || f.hdr.Uid != 65532 || f.hdr.Mode&0o777 != 0o700 {
			t.Errorf("state dir %s: %+v", d, f.hdr)
		}
	}
	if !strings.Contains(string(files["/etc/passwd"].body), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd: %q", files["/etc/passwd"].body)
	}
	// Run the binary as it is in the layer.
	exe := filepath.Join(dir, "atomfed-from-layer")
	if err := os.WriteFile(exe, bin.body, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), testVersion) {
		t.Errorf("atomfed --version from the layer: %v: %s", err, out)
	}
	// Reproducible.
	d1, _ := img.Digest()
	again, err := image.Build(image.Options{Binary: atomfedBin, Version: testVersion, Revision: "abc123", Created: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := again.Digest(); d1 != d2 {
		t.Errorf("two builds of the same binary: %s and %s", d1, d2)
	}
	// A dynamically linked binary is refused.
	if _, err := image.Build(image.Options{Binary: "/bin/ls"}); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("/bin/ls (dynamic): %v", err)
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestDockerfileMatchesTheImage: deploy/Dockerfile, for teams that build
// with Docker, makes the layout `make image` makes: the same user,
// entrypoint, working directory, passwd and group, state directories with
// their owner, and an empty base.
func TestDockerfileMatchesTheImage(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	final := df[strings.LastIndex(df, "\nFROM "):]
	if !strings.HasPrefix(final, "\nFROM scratch") {
		t.Errorf("the final stage is not FROM scratch: %q", strings.SplitN(final, "\n", 3)[1])
	}
	var ep []string
	m := regexp.MustCompile(`(?m)^ENTRYPOINT (.*)$`).FindStringSubmatch(final)
	if m == nil || json.Unmarshal([]byte(m[1]), &ep) != nil || !slices.Equal(ep, []string{image.BinaryPath}) {
		t.Errorf("ENTRYPOINT %v, want [%s]", m, image.BinaryPath)
	}
	for _, want := range []string{"\nUSER " + image.User + "\n", "\nWORKDIR " + image.Home + "\n", "/out" + image.BinaryPath, "/out" + image.CAPath, "CGO_ENABLED=0"} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	for _, f := range []struct{ content, path string }{{image.Passwd, "/etc/passwd"}, {image.Group, "/etc/group"}} {
		printf := "printf '" + strings.ReplaceAll(f.content, "\n", `\n`) + "' > /out" + f.path
		if !strings.Contains(df, printf) {
			t.Errorf("the Dockerfile's %s differs from the image's: want %q", f.path, printf)
		}
	}
	for _, d := range image.StateDirs {
		if !strings.Contains(df, "/out"+d) || !regexp.MustCompile(`chown 65532:65532 [^\n]*/out`+regexp.QuoteMeta(d)).MatchString(df) {
			t.Errorf("the Dockerfile does not make %s owned by the user", d)
		}
	}
}
