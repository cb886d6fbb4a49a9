package migrations_test

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/weftobs/weft/migrations"
)

func TestEmbedded(t *testing.T) {
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 2 || all[0].Version != 1 || !strings.Contains(all[0].Statements[0], "CREATE CONSTRAINT") {
		t.Fatalf("want V001 constraints first, got %+v", all)
	}
	for _, m := range all {
		for _, s := range m.Statements {
			if strings.Contains(s, ";") {
				t.Errorf("%s: statement not split: %q", m.File, s)
			}
		}
	}
}

func TestPlan(t *testing.T) {
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	pending, err := migrations.Plan(all, nil)
	if err != nil || len(pending) != len(all) {
		t.Fatalf("empty history: %d pending, %v", len(pending), err)
	}
	applied := []migrations.Applied{{Version: 1, Description: all[0].Description, Checksum: all[0].Checksum}}
	pending, err = migrations.Plan(all, applied)
	if err != nil || len(pending) != len(all)-1 || pending[0].Version != 2 {
		t.Fatalf("V001 applied: %v, %v", pending, err)
	}
	applied[0].Checksum = "0123456789abcdef"
	if _, err := migrations.Plan(all, applied); !errors.Is(err, migrations.ErrEdited) || !strings.Contains(err.Error(), "V001") {
		t.Fatalf("edited V001: got %v", err)
	}
	if _, err := migrations.Plan(all, []migrations.Applied{{Version: 99, Description: "future"}}); err == nil {
		t.Fatal("an unknown applied version must be refused")
	}
}

func TestParseErrors(t *testing.T) {
	_, err := migrations.Parse(fstest.MapFS{
		"V001__a.cypher": {Data: []byte("RETURN 1;")},
		"V1__b.cypher":   {Data: []byte("RETURN 2;")},
		"bad.cypher":     {Data: []byte("RETURN 3;")},
		"V002__c.cypher": {Data: []byte("// only a comment\n")},
	})
	for _, want := range []string{"same version", "bad.cypher", "no statement"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error about %q, got %v", want, err)
		}
	}
}
