package awsbus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

func TestParseURL(t *testing.T) {
	c, err := awsbus.ParseURL("aws://eu-west-1?endpoint=http://127.0.0.1:4566&prefix=shop&fifo=true&content_based_dedup=true" +
		"&kms_key_id=alias/aws/sqs&visibility_timeout=45s&wait_time=2s&max_receive_count=5&retention=96h&max_in_flight=20" +
		"&access_key_id=AKIDEXAMPLE&secret_access_key=s3cr3tvalue&profile=dev")
	if err != nil {
		t.Fatal(err)
	}
	want := awsbus.Config{
		Region: "eu-west-1", Endpoint: "http://127.0.0.1:4566", Prefix: "shop", FIFO: true, ContentBasedDeduplication: true,
		KMSKeyID: "alias/aws/sqs", VisibilityTimeout: 45 * time.Second, WaitTime: 2 * time.Second, MaxReceiveCount: 5,
		Retention: 96 * time.Hour, MaxInFlight: 20, AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "s3cr3tvalue", Profile: "dev",
	}
	if *c != want {
		t.Errorf("ParseURL = %+v, want %+v", *c, want)
	}
	if c, err := awsbus.ParseURL("sns+sqs://?region=us-east-1"); err != nil || c.Region != "us-east-1" {
		t.Errorf("sns+sqs with region parameter: %+v, %v", c, err)
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, u := range []string{
		"aws://us-east-1?bogus=1",
		"aws://us-east-1?visibility_timeout=1.5s",
		"aws://us-east-1?wait_time=30s",
		"aws://us-east-1?max_receive_count=-1",
		"aws://us-east-1?fifo=maybe",
		"aws://us-east-1?endpoint=localhost:4566",
		"aws://us-east-1?prefix=has.dot",
		"aws://us-east-1?region=eu-west-1",
		"aws://us-east-1:443",
		"aws://us-east-1/path",
		"aws://us-east-1?access_key_id=AKIDONLY&secret_access_key=",
		"aws://user:s3cr3tvalue@us-east-1",
		"aws://us-east-1?secret_access_key=s3cr3tvalue&bogus=1",
	} {
		err := driver.CheckURL(u)
		if err == nil {
			t.Errorf("CheckURL(%q) accepted it", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3tvalue") {
			t.Errorf("CheckURL(%q) error shows the secret: %v", u, err)
		}
	}
	if err := driver.CheckURL("aws://us-east-1?bogus=1"); !errors.Is(err, driver.ErrUnknownParam) {
		t.Errorf("unknown parameter: %v, want ErrUnknownParam", err)
	}
}

// TestOpenURL opens the emulator by URL and publishes through it.
func TestOpenURL(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := driver.OpenURL(ctx, "aws://us-east-1?endpoint="+cfg.Endpoint+"&prefix="+cfg.Prefix+
		"&access_key_id=test&secret_access_key=test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if d.Capabilities().Name != "aws" {
		t.Errorf("opened %s", d.Capabilities().Name)
	}
	dest := driver.NewDestination(driver.Command, "svc", "do")
	if err := d.Publish(ctx, dest, []*driver.Message{{ID: "1", Source: "/s", Type: "t"}}); err != nil {
		t.Fatal(err)
	}
}
