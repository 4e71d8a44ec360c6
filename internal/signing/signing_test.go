package signing

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	kp, err := GenerateKeyPair([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(kp.PrivatePEM), "ENCRYPTED SIGSTORE PRIVATE KEY") {
		t.Fatalf("private key is not in cosign's encrypted format:\n%s", kp.PrivatePEM)
	}
	s, err := ParseSigner(kp.PrivatePEM, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParsePublicKey(kp.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != kp.KeyID || v.KeyID != kp.KeyID || len(kp.KeyID) != 32 {
		t.Fatalf("key ids differ: signer %s verifier %s pair %s", s.KeyID, v.KeyID, kp.KeyID)
	}
	body := []byte(`{"name":"eu-west","nonce":"n1","timestamp":"2026-11-26T00:00:00Z"}`)
	sig, err := s.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(body, sig); err != nil {
		t.Fatalf("own signature refused: %v", err)
	}
	tampered := append([]byte(nil), body...)
	tampered[10] ^= 1
	if err := v.Verify(tampered, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signature over other bytes accepted: %v", err)
	}
	other, _ := GenerateKeyPair(nil)
	ov, _ := ParsePublicKey(other.PublicPEM)
	if err := ov.Verify(body, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another key accepted the signature: %v", err)
	}
	if err := v.Verify(body, "%%%"); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("non-base64 signature: %v", err)
	}
}

func TestWrongPasswordIsRefused(t *testing.T) {
	kp, _ := GenerateKeyPair([]byte("right"))
	if _, err := ParseSigner(kp.PrivatePEM, []byte("wrong")); !errors.Is(err, ErrBadKey) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := ParseSigner([]byte("not a key"), nil); !errors.Is(err, ErrBadKey) {
		t.Fatalf("garbage key: %v", err)
	}
}

// TestLegacyCosignKeyLabel checks that keys written by older cosign
// releases ("ENCRYPTED COSIGN PRIVATE KEY", same encryption) load.
func TestLegacyCosignKeyLabel(t *testing.T) {
	kp, _ := GenerateKeyPair([]byte("pw"))
	blk, _ := pem.Decode(kp.PrivatePEM)
	blk.Type = "ENCRYPTED COSIGN PRIVATE KEY"
	s, err := ParseSigner(pem.EncodeToMemory(blk), []byte("pw"))
	if err != nil {
		t.Fatalf("legacy cosign key refused: %v", err)
	}
	if s.KeyID != kp.KeyID {
		t.Fatal("legacy key loads as a different key")
	}
}

// TestOpenSSLInterop checks the signature format against an independent
// implementation: OpenSSL's ECDSA-with-SHA256 DER signatures are what
// cosign sign-blob emits (base64 encoded).
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is required for the interop test (apt-get install openssl)")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	key, pub, body, sigf := filepath.Join(dir, "k.pem"), filepath.Join(dir, "p.pem"), filepath.Join(dir, "body"), filepath.Join(dir, "sig")
	run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
	run("ec", "-in", key, "-pubout", "-out", pub)
	msg := []byte(`{"key_id":"x","nonce":"abc","timestamp":"2026-11-26T00:00:00Z"}`)
	if err := os.WriteFile(body, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	// OpenSSL signs, we verify.
	run("dgst", "-sha256", "-sign", key, "-out", sigf, body)
	raw, _ := os.ReadFile(sigf)
	pubPEM, _ := os.ReadFile(pub)
	v, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(msg, base64.StdEncoding.EncodeToString(raw)); err != nil {
		t.Fatalf("OpenSSL's signature refused: %v", err)
	}
	// We sign with the same (unencrypted SEC 1) key, OpenSSL verifies.
	keyPEM, _ := os.ReadFile(key)
	s, err := ParseSigner(keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := s.Sign(msg)
	der, _ := base64.StdEncoding.DecodeString(sig)
	if err := os.WriteFile(sigf, der, 0o600); err != nil {
		t.Fatal(err)
	}
	run("dgst", "-sha256", "-verify", pub, "-signature", sigf, body)
}

// TestCosignSignBlobPath signs a body the way `cosign sign-blob --key`
// does with a key made by our keygen (cosign's encrypted format): load the
// PEM with cryptoutils.UnmarshalPEMToPrivateKey and the password, wrap it
// with signature.LoadSignerVerifier(SHA-256), sign the raw bytes, print
// base64. atomfed must accept that signature.
func TestCosignSignBlobPath(t *testing.T) {
	kp, err := GenerateKeyPair([]byte("cosign-pw"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(kp.PrivatePEM, cryptoutils.StaticPasswordFunc([]byte("cosign-pw")))
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadSignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"name":"eu-west","url":"https://eu-west.example.com","key_id":"` + kp.KeyID + `","timestamp":"2026-11-26T00:00:00Z","nonce":"n-0123456789"}`)
	raw, err := sv.SignMessage(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParsePublicKey(kp.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(body, base64.StdEncoding.EncodeToString(raw)); err != nil {
		t.Fatalf("a cosign sign-blob signature was refused: %v", err)
	}
}
