package snaprepo

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/atomcloud/atomfed/recovery"
)

// S3 is a bucket repository; objects go under <prefix>/controlplane/.
type S3 struct {
	client *s3.Client
	bucket string
	prefix string
}

// NewS3 returns the repository in the bucket of cfg, under prefix (the
// backups' S3_PATH). The credentials stay in the client.
func NewS3(cfg recovery.S3, prefix string) (*S3, error) {
	endpoint := cfg.Endpoint
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("S3_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("S3_CA_FILE %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	keyID, secret := cfg.KeyID, cfg.Secret
	client := s3.New(s3.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: !cfg.HostStyle,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret, Source: "atomfed"}, nil
		}),
		HTTPClient: &http.Client{Transport: tr, Timeout: 5 * time.Minute},
		// S3-compatible servers do not all take the SDK's default
		// trailing checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           2,
	})
	return &S3{client: client, bucket: cfg.Bucket, prefix: strings.Trim(path.Join(prefix, "controlplane"), "/")}, nil
}

func (s *S3) key(name string) string      { return s.prefix + "/" + name }
func (s *S3) String() string              { return "s3://" + s.bucket + "/" + s.prefix }
func (s *S3) Location(name string) string { return "s3://" + s.bucket + "/" + s.key(name) }

// Put uploads an object (S3 makes it visible whole or not at all).
func (s *S3) Put(ctx context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ContentType: aws.String("application/gzip")})
	if err != nil {
		return fmt.Errorf("snapshot repository %s: upload %s: %w", s, name, explainS3(err))
	}
	return nil
}

// Get downloads an object of at most max bytes.
func (s *S3) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name))})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("%s: %w", s.Location(name), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot repository %s: download %s: %w", s, name, explainS3(err))
	}
	defer out.Body.Close()
	return readMax(out.Body, max, s.Location(name))
}

// Delete removes an object (S3 answers success for a missing one).
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(name))}); err != nil {
		return fmt.Errorf("snapshot repository %s: delete %s: %w", s, name, explainS3(err))
	}
	return nil
}

// explainS3 says what an S3 error means for the repository. The SDK's
// messages carry no credential (the signature's key id at most).
func explainS3(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
			return fmt.Errorf("wrong S3 credentials or no access to the bucket (S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY or S3_CREDENTIALS_FILE): %s", ae.ErrorCode())
		case "NoSuchBucket":
			return errors.New("the bucket does not exist (S3_BUCKET)")
		case "QuotaExceeded", "EntityTooLarge", "InsufficientStorage":
			return fmt.Errorf("the bucket is full: %s", ae.ErrorCode())
		}
		return fmt.Errorf("%s: %s", ae.ErrorCode(), ae.ErrorMessage())
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) {
		return fmt.Errorf("the S3 endpoint is unreachable (S3_ENDPOINT): %v", err)
	}
	var ce *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ce) || errors.As(err, &ua) {
		return fmt.Errorf("the S3 endpoint's certificate is not trusted (S3_CA_FILE): %v", err)
	}
	return err
}
