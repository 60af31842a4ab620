package remote

import (
	"fmt"
	"net/url"
	"strings"
)

// Scheme starts the --store value of a bucket: s3://bucket/prefix.
const Scheme = "s3://"

// IsURL reports whether a --store value names a bucket rather than a
// directory.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// Location is where in which S3 service a store lives.
type Location struct {
	Bucket   string
	Prefix   string // "" or ending in "/": keys are Prefix+"data/<sha1>"
	Endpoint string // http(s)://host:port; "" for AWS itself
	Region   string // "" for the environment's, else us-east-1
}

// ParseURL reads s3://bucket[/prefix][?endpoint=URL&region=NAME].
func ParseURL(s string) (Location, error) {
	bad := func(why string) (Location, error) {
		return Location{}, fmt.Errorf("store %q: %s (want s3://bucket/prefix?endpoint=http://host:port)", s, why)
	}
	if !IsURL(s) {
		return bad("not an s3:// URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad(err.Error())
	}
	if u.User != nil || u.Fragment != "" {
		return bad("user names and fragments have no meaning here")
	}
	loc := Location{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	if loc.Bucket == "" {
		return bad("no bucket")
	}
	if strings.Contains(loc.Prefix, "//") {
		return bad("empty path segment in the prefix")
	}
	if loc.Prefix != "" {
		loc.Prefix += "/"
	}
	for k, v := range u.Query() {
		if len(v) != 1 {
			return bad("parameter " + k + " given more than once")
		}
		switch k {
		case "endpoint":
			e, err := url.Parse(v[0])
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
				return bad("endpoint is not an http:// or https:// URL")
			}
			loc.Endpoint = v[0]
		case "region":
			loc.Region = v[0]
		default:
			return bad("unknown parameter " + k)
		}
	}
	return loc, nil
}

// String gives the location back as a URL.
func (l Location) String() string {
	s := Scheme + l.Bucket
	if l.Prefix != "" {
		s += "/" + strings.TrimSuffix(l.Prefix, "/")
	}
	sep := "?"
	if l.Endpoint != "" {
		s += sep + "endpoint=" + l.Endpoint
		sep = "&"
	}
	if l.Region != "" {
		s += sep + "region=" + url.QueryEscape(l.Region)
	}
	return s
}
