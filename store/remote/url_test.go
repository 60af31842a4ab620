package remote

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	good := map[string]Location{
		"s3://b":                                {Bucket: "b"},
		"s3://b/":                               {Bucket: "b"},
		"s3://b/p/q/":                           {Bucket: "b", Prefix: "p/q/"},
		"s3://b/p?region=eu-west-1":             {Bucket: "b", Prefix: "p/", Region: "eu-west-1"},
		"s3://b?endpoint=http://127.0.0.1:7070": {Bucket: "b", Endpoint: "http://127.0.0.1:7070"},
	}
	for in, want := range good {
		got, err := ParseURL(in)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		again, err := ParseURL(got.String())
		if err != nil || again != got {
			t.Errorf("ParseURL(%q.String() = %q) = %+v, %v", in, got.String(), again, err)
		}
	}
	for _, in := range []string{"", "/dir", "s3:/b", "s3://", "s3:///p", "s3://b/p//q", "s3://b?endpoint=ftp://x", "s3://b?endpoint=", "s3://b?color=red", "s3://u@b", "s3://b?region=a&region=b"} {
		if _, err := ParseURL(in); err == nil || !strings.Contains(err.Error(), "want s3://") {
			t.Errorf("ParseURL(%q) = %v, want an error that shows the form", in, err)
		}
	}
}
