// Package signing is atomfed's request signing on sigstore: ECDSA P-256 key
// pairs in cosign's formats, signatures over exact bytes that `cosign
// sign-blob --key` also produces (base64 of an ASN.1 DER ECDSA signature over
// the SHA-256 of the bytes), and key ids derived from public keys.
package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Sentinel errors.
var (
	// ErrBadSignature means a signature does not verify against the key.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrBadKey means a key could not be loaded or is not ECDSA P-256.
	ErrBadKey = errors.New("unusable key")
)

// PasswordEnv is the environment variable cosign reads a key's password
// from; atomfed does the same.
const PasswordEnv = "COSIGN_PASSWORD"

// KeyPair is a generated key pair, PEM encoded. The private key is in
// cosign's encrypted format ("ENCRYPTED SIGSTORE PRIVATE KEY").
type KeyPair struct {
	PrivatePEM []byte
	PublicPEM  []byte
	KeyID      string
}

// GenerateKeyPair makes an ECDSA P-256 key pair and encrypts the private key
// with password, as `cosign generate-key-pair` does (an empty password is
// allowed and still encrypts, like cosign).
func GenerateKeyPair(password []byte) (*KeyPair, error) {
	if password == nil {
		password = []byte{}
	}
	priv, pub, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), cryptoutils.StaticPasswordFunc(password))
	if err != nil {
		return nil, fmt.Errorf("generate key pair: %w", err)
	}
	v, err := ParsePublicKey(pub)
	if err != nil {
		return nil, err
	}
	return &KeyPair{PrivatePEM: priv, PublicPEM: pub, KeyID: v.KeyID}, nil
}

// Signer signs with a private key.
type Signer struct {
	sv        *signature.ECDSASignerVerifier
	priv      crypto.PrivateKey
	KeyID     string
	PublicPEM []byte
}

// LoadSigner reads a private key file (cosign encrypted, PKCS#8 or SEC 1
// PEM) and decrypts it with password.
func LoadSigner(path string, password []byte) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrBadKey, path, err)
	}
	return ParseSigner(b, password)
}

// ParseSigner parses a PEM private key; see LoadSigner.
func ParseSigner(pemBytes, password []byte) (*Signer, error) {
	if password == nil {
		password = []byte{}
	}
	k, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, cryptoutils.StaticPasswordFunc(password))
	if err != nil {
		return nil, fmt.Errorf("%w: %v (wrong %s?)", ErrBadKey, err, PasswordEnv)
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want an ECDSA P-256 private key, got %T", ErrBadKey, k)
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	id, err := KeyID(priv.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{sv: sv, priv: priv, KeyID: id, PublicPEM: pub}, nil
}

// Sign returns the base64 signature of body, the value of the
// X-Atomfed-Signature header.
func (s *Signer) Sign(body []byte) (string, error) {
	sig, err := s.sv.SignMessage(bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// Verifier checks signatures with a public key.
type Verifier struct {
	v     *signature.ECDSAVerifier
	KeyID string
}

// ParsePublicKey parses a PEM public key (ECDSA P-256 only).
func ParsePublicKey(pemBytes []byte) (*Verifier, error) {
	k, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want an ECDSA P-256 public key, got %T", ErrBadKey, k)
	}
	v, err := signature.LoadECDSAVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &Verifier{v: v, KeyID: id}, nil
}

// Verify checks a base64 signature over body.
func (v *Verifier) Verify(body []byte, sigB64 string) error {
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrBadSignature)
	}
	if err := v.v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(body)); err != nil {
		return ErrBadSignature
	}
	return nil
}

// KeyID names a public key: the first 16 bytes of the SHA-256 of its PKIX
// DER encoding, hex encoded.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16]), nil
}

// NewSigner makes a fresh ECDSA P-256 signer in memory, without the cost of
// encrypting a key file (tests and throwaway dev keys).
func NewSigner() (*Signer, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return ParseSigner(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil)
}

// PrivatePEM returns the signer's private key as unencrypted PKCS#8 PEM,
// for throwaway dev keys only.
func (s *Signer) PrivatePEM() ([]byte, error) {
	priv, ok := s.priv.(*ecdsa.PrivateKey)
	if !ok {
		return nil, ErrBadKey
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
