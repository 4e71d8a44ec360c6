package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/internal/signing"
)

func newKeygenCmd() *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Write a cosign-format ECDSA P-256 key pair: PREFIX.key and PREFIX.pub",
		Long: `Write an ECDSA P-256 key pair in cosign's formats: PREFIX.key is the private
key encrypted with the password in COSIGN_PASSWORD (mode 0600), PREFIX.pub the
PEM public key. COSIGN_PASSWORD must be set; it may be empty
(COSIGN_PASSWORD= atomfed keygen ...), which still encrypts, as cosign does.
Existing files are never overwritten. Point COSIGN_KEY_PATH at PREFIX.key to
make it a node's signing key.`,
		Example: `  COSIGN_PASSWORD=... atomfed keygen --out ~/.atomfed/keys/sa-east
  COSIGN_PASSWORD=... atomfed keygen --out /etc/atomfed/us-east-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			password, ok := os.LookupEnv(signing.PasswordEnv)
			if !ok {
				return fmt.Errorf("%s is not set: set the password that encrypts the private key (it may be empty)", signing.PasswordEnv)
			}
			keyPath, pubPath, id, err := writeKeyPair(prefix, []byte(password))
			if err != nil {
				return err
			}
			fmt.Printf("private key: %s\npublic key:  %s\nkey id:      %s\n", keyPath, pubPath, id)
			return nil
		},
	}
	cmd.Flags().StringVar(&prefix, "out", "", "path prefix of the key files (writes PREFIX.key and PREFIX.pub)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// writeKeyPair generates a key pair and writes PREFIX.key (0600) and
// PREFIX.pub (0644), refusing to replace either file. A half-written pair is
// removed.
func writeKeyPair(prefix string, password []byte) (keyPath, pubPath, keyID string, err error) {
	prefix = strings.TrimSuffix(strings.TrimSuffix(prefix, ".key"), ".pub")
	if prefix == "" {
		return "", "", "", errors.New("--out must name a path prefix")
	}
	keyPath, pubPath = prefix+".key", prefix+".pub"
	// Keys belong outside a source tree (~/.atomfed/keys in the README):
	// make the directory, private to its owner, when it is missing.
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return "", "", "", err
	}
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", "", fmt.Errorf("%s already exists: refusing to overwrite a key (remove it or pick another --out)", p)
		}
	}
	kp, err := signing.GenerateKeyPair(password)
	if err != nil {
		return "", "", "", err
	}
	if err := writeNew(keyPath, kp.PrivatePEM, 0o600); err != nil {
		return "", "", "", err
	}
	if err := writeNew(pubPath, kp.PublicPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", "", err
	}
	return keyPath, pubPath, kp.KeyID, nil
}

// writeNew creates path exclusively with mode perm and writes b durably.
func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists: refusing to overwrite a key", path)
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
