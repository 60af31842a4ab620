package remote

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"github.com/theater-storefs/theater-storefs/store"
)

// errConflict is a conditional write that lost to another writer.
var errConflict = errors.New("changed by another writer")

// bucket is the few S3 calls the store makes, with their errors mapped to
// the store's sentinels.
type bucket struct {
	c      *s3.Client
	name   string
	prefix string
}

func newBucket(ctx context.Context, loc Location) (*bucket, error) {
	// The SDK's own log lines (IMDS fallbacks and the like) would break
	// the one-line errors users see; what matters comes back as errors.
	opts := []func(*config.LoadOptions) error{config.WithLogger(logging.Nop{})}
	if loc.Region != "" {
		opts = append(opts, config.WithRegion(loc.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("store %s: AWS configuration: %w", loc, err)
	}
	if cfg.Credentials == nil {
		return nil, fmt.Errorf("store %s: no AWS credentials provider", loc)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("store %s: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)", loc)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // what S3-compatible services expect
	}
	// A service that stops answering fails a call rather than hang it:
	// the mount's operations are not cancelled by their callers.
	cfg.HTTPClient = awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = 10 * time.Second
	}).WithTransportOptions(func(tr *http.Transport) {
		// The SDK tries a call 3 times: a minute in all.
		tr.ResponseHeaderTimeout = 20 * time.Second
	})
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if loc.Endpoint != "" {
			o.BaseEndpoint = aws.String(loc.Endpoint)
			o.UsePathStyle = true
		}
		// Content is verified by its SHA-1 name; the CRC trailers newer
		// SDKs add are not understood by every S3-compatible service.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &bucket{c: c, name: loc.Bucket, prefix: loc.Prefix}, nil
}

func (b *bucket) key(k string) *string { return aws.String(b.prefix + k) }

// status returns the HTTP status of a failed call, or 0.
func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// mapErr turns what S3 answered into the store's sentinels: a missing key
// is ErrNotFound, a failed condition errConflict, a refusal
// os.ErrPermission, any other failure ErrUnavailable. conditional says the
// call carried a condition: then a missing key also means the object
// changed (versitygw and AWS answer If-Match on a removed key with 404),
// and a 500 leaves the change unknown (Ceph RGW answers a lost race
// between conditional PUTs so): errMaybe, to read again.
func mapErr(ctx context.Context, err error, conditional bool) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err() // the caller gave up, not the service
	}
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch st := status(err); {
	case code == "NoSuchBucket":
		return fmt.Errorf("%w: the bucket does not exist (%s)", store.ErrNotFound, short(err))
	case (st == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound") && conditional:
		return errConflict
	case st == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		return fmt.Errorf("%w (%s)", store.ErrNotFound, short(err))
	case st == http.StatusPreconditionFailed || code == "PreconditionFailed":
		return errConflict
	case st == http.StatusConflict && conditional:
		return errConflict // ConditionalRequestConflict: a race in progress
	case st == http.StatusInternalServerError && conditional:
		return errMaybe
	case st == http.StatusForbidden:
		return fmt.Errorf("%w (%s)", os.ErrPermission, short(err))
	}
	return serviceError(short(err))
}

// errMaybe is a conditional change whose outcome is unknown: the service
// failed, and may have made it or not.
var errMaybe = errors.New("the service failed during a conditional change")

// serviceError is a failure of the service or of the way to it: the
// store is unavailable, and the message says why.
type serviceError string

func (e serviceError) Error() string        { return string(e) }
func (e serviceError) Is(target error) bool { return target == store.ErrUnavailable }

// short cuts the SDK's layered message ("operation error S3: PutObject,
// https response error StatusCode: 403, RequestID: ..., api error
// AccessDenied: ...") to what a user needs: the call, the status and the
// service's words.
func short(err error) string {
	var oe *smithy.OperationError
	var ae smithy.APIError
	if errors.As(err, &oe) && errors.As(err, &ae) {
		msg := ae.ErrorCode()
		if m := ae.ErrorMessage(); m != "" { // a HEAD's answer has none
			msg += ": " + m
		}
		if st := status(err); st != 0 {
			return fmt.Sprintf("S3 %s: %d %s", oe.OperationName, st, msg)
		}
		return fmt.Sprintf("S3 %s: %s", oe.OperationName, msg)
	}
	var ne *net.OpError
	if errors.As(err, &oe) && errors.As(err, &ne) {
		return fmt.Sprintf("S3 %s: %v", oe.OperationName, ne)
	}
	var ue *url.Error
	if errors.As(err, &oe) && errors.As(err, &ue) {
		return fmt.Sprintf("S3 %s: %v", oe.OperationName, ue.Err)
	}
	if errors.As(err, &oe) {
		return fmt.Sprintf("S3 %s: %v", oe.OperationName, oe.Err)
	}
	return err.Error()
}

// unquote takes the quotes off an ETag. Conditions are sent without them:
// Ceph RGW matches only the bare value, and AWS and versitygw take both.
func unquote(etag string) string { return strings.Trim(etag, `"`) }

type objectInfo struct {
	size int64
	etag string
	mod  time.Time
}

func (b *bucket) head(ctx context.Context, key string) (objectInfo, error) {
	out, err := b.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: b.key(key)})
	if err != nil {
		return objectInfo{}, mapErr(ctx, err, false)
	}
	return objectInfo{aws.ToInt64(out.ContentLength), unquote(aws.ToString(out.ETag)), aws.ToTime(out.LastModified)}, nil
}

// get opens an object, or the bytes [off, off+n) of it when n > 0.
func (b *bucket) get(ctx context.Context, key string, off, n int64) (io.ReadCloser, objectInfo, error) {
	in := &s3.GetObjectInput{Bucket: &b.name, Key: b.key(key)}
	if n > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	out, err := b.c.GetObject(ctx, in)
	if err != nil {
		return nil, objectInfo{}, mapErr(ctx, err, false)
	}
	return out.Body, objectInfo{aws.ToInt64(out.ContentLength), unquote(aws.ToString(out.ETag)), aws.ToTime(out.LastModified)}, nil
}

// Conditions of put: anyVersion writes whatever is there; createOnly
// only where nothing is; any other value only over that ETag.
const (
	anyVersion = "*any*"
	createOnly = ""
)

// put writes an object of size bytes from body, if the condition holds,
// and returns its new ETag. md5, if given, is the content's MD5, which the
// service checks.
func (b *bucket) put(ctx context.Context, key string, body io.ReadSeeker, size int64, ifVersion string, md5 []byte, opts ...func(*s3.Options)) (string, error) {
	in := &s3.PutObjectInput{Bucket: &b.name, Key: b.key(key), Body: body, ContentLength: aws.Int64(size)}
	switch ifVersion {
	case anyVersion:
	case createOnly:
		in.IfNoneMatch = aws.String("*")
	default:
		in.IfMatch = aws.String(ifVersion)
		// Not retried by the SDK: a retry of a change that landed fails
		// its condition, and the change would seem lost. change reads
		// the label again instead.
		opts = append(opts, noRetries)
	}
	if md5 != nil {
		in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(md5))
	}
	out, err := b.c.PutObject(ctx, in, opts...)
	if err != nil {
		return "", mapErr(ctx, err, ifVersion != anyVersion)
	}
	return unquote(aws.ToString(out.ETag)), nil
}

func noRetries(o *s3.Options) { o.RetryMaxAttempts = 1 }

// unsignedPayload leaves the body out of a request's signature, sparing
// the SDK a SHA-256 pass over it. Only for blobs: their SHA-1 name checks
// their content on every read through.
func unsignedPayload(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// del removes an object if its ETag is still version ("" for any).
func (b *bucket) del(ctx context.Context, key, version string) error {
	in := &s3.DeleteObjectInput{Bucket: &b.name, Key: b.key(key)}
	var opts []func(*s3.Options)
	if version != "" {
		in.IfMatch = aws.String(version)
		opts = append(opts, noRetries)
	}
	_, err := b.c.DeleteObject(ctx, in, opts...)
	return mapErr(ctx, err, version != "")
}

// errStop ends a listing early, without error.
var errStop = errors.New("stop listing")

// list calls fn for every key under dir, in key order, without dir, until
// fn returns errStop. hint > 0 asks for pages of that many keys.
func (b *bucket) list(ctx context.Context, dir string, hint int, fn func(name string, info objectInfo) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: b.key(dir)}
	if hint > 0 {
		in.MaxKeys = aws.Int32(int32(hint))
	}
	p := s3.NewListObjectsV2Paginator(b.c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return mapErr(ctx, err, false)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), b.prefix+dir)
			err := fn(name, objectInfo{aws.ToInt64(o.Size), unquote(aws.ToString(o.ETag)), aws.ToTime(o.LastModified)})
			if err == errStop {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// listDir calls fn for every entry one level under dir (ending in "/"):
// objects, and the common prefixes below it as directories (name without
// its "/"). dir's own key, a directory marker, is not an entry.
func (b *bucket) listDir(ctx context.Context, dir string, fn func(name string, isDir bool, size int64) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: b.key(dir), Delimiter: aws.String("/")}
	p := s3.NewListObjectsV2Paginator(b.c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return mapErr(ctx, err, false)
		}
		for _, cp := range page.CommonPrefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), b.prefix+dir), "/")
			if err := fn(name, true, 0); err != nil {
				return err
			}
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), b.prefix+dir)
			if name == "" {
				continue
			}
			if err := fn(name, false, aws.ToInt64(o.Size)); err != nil {
				return err
			}
		}
	}
	return nil
}
