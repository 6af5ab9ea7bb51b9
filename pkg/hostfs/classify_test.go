package hostfs

import (
	"slices"
	"testing"
)

func file(sum string, mode uint32) *Meta {
	return &Meta{Kind: KindFile, Mode: mode, Size: int64(len(sum)), SHA256: sum}
}

func TestClassify(t *testing.T) {
	a, b, c := file("aa", 0o644), file("bb", 0o644), file("cc", 0o644)
	dir := &Meta{Kind: KindDir, Mode: 0o755}
	link := func(to string) *Meta { return &Meta{Kind: KindSymlink, Mode: 0o777, target: to} }
	owned := &Meta{Kind: KindFile, Mode: 0o644, UID: 1000, Size: 2, SHA256: "aa"}
	tests := []struct {
		name           string
		old, new, live *Meta
		want           EtcClass
		local, image   []Change
		outcome        Outcome
	}{
		{"untouched_and_unchanged_is_not_reported", a, a, a, "", nil, nil, ""},
		{"untouched_file_takes_the_new_default", a, b, a, NewDefaultApplies, nil, []Change{ChangeContent}, TakesNewDefault},
		{"untouched_file_the_image_deletes_goes_away", a, nil, a, NewDefaultApplies, nil, []Change{ChangeDeleted}, Absent},
		{"new_default_file_appears", nil, a, nil, NewDefaultApplies, nil, []Change{ChangeAdded}, TakesNewDefault},
		{"local_edit_of_an_unchanged_default_is_kept", a, a, b, LocalEditKept, []Change{ChangeContent}, nil, KeepsLocal},
		{"local_edit_equal_to_the_new_default_loses_nothing", a, b, b, LocalEditKept, []Change{ChangeContent}, []Change{ChangeContent}, KeepsLocal},
		{"local_edit_of_a_changed_default_is_a_conflict", a, b, c, Conflict, []Change{ChangeContent}, []Change{ChangeContent}, KeepsLocal},
		{"local_edit_of_a_deleted_default_is_a_conflict", a, nil, c, Conflict, []Change{ChangeContent}, []Change{ChangeDeleted}, KeepsLocal},
		{"owner_only_change_pins_the_file", a, b, owned, Conflict, []Change{ChangeOwner}, []Change{ChangeContent}, KeepsLocal},
		{"mode_only_change_pins_the_file", a, a, file("aa", 0o600), LocalEditKept, []Change{ChangeMode}, nil, KeepsLocal},
		{"retargeted_symlink_is_a_local_edit", link("x"), link("x"), link("y"), LocalEditKept, []Change{ChangeTarget}, nil, KeepsLocal},
		{"file_replaced_by_a_symlink_is_a_type_change", a, a, link("x"), LocalEditKept, []Change{ChangeType}, nil, KeepsLocal},
		{"added_locally_only", nil, nil, a, LocalOnly, []Change{ChangeAdded}, nil, KeepsLocal},
		{"added_locally_and_by_the_image_differently", nil, b, a, Conflict, []Change{ChangeAdded}, []Change{ChangeAdded}, KeepsLocal},
		{"added_locally_as_the_image_did", nil, a, a, LocalEditKept, []Change{ChangeAdded}, []Change{ChangeAdded}, KeepsLocal},
		{"deleted_locally_stays_deleted", a, b, nil, DeletedLocally, []Change{ChangeDeleted}, []Change{ChangeContent}, Absent},
		{"directory_mode_change_is_listed_but_the_new_directory_wins", dir, dir, &Meta{Kind: KindDir, Mode: 0o700}, LocalEditKept, []Change{ChangeMode}, nil, TakesNewDefault},
		{"different_sizes_differ_without_reading", &Meta{Kind: KindFile, Size: 1}, &Meta{Kind: KindFile, Size: 1}, &Meta{Kind: KindFile, Size: 2}, LocalEditKept, []Change{ChangeContent}, nil, KeepsLocal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, local, image := classify(tt.old, tt.new, tt.live)
			if class != tt.want || !slices.Equal(local, tt.local) || !slices.Equal(image, tt.image) {
				t.Errorf("classify = %q local=%v image=%v, want %q local=%v image=%v", class, local, image, tt.want, tt.local, tt.image)
			}
			if class == "" {
				return
			}
			if got := outcome(class, tt.new, tt.live); got != tt.outcome {
				t.Errorf("outcome = %q, want %q", got, tt.outcome)
			}
			if class.LocalEdit() != (tt.local != nil) {
				t.Errorf("LocalEdit() = %v with local changes %v", class.LocalEdit(), tt.local)
			}
		})
	}
}

func TestParseTmpfiles(t *testing.T) {
	data := []byte(`# c
d /var/lib/a 0755 root root -
d! /var/lib/boot-only
C /var/lib/tree - - - - /usr/share/tree
z /var/lib/adjust
d /var/lib/%m
L+ "/var/lib/quoted" - - - - /x
d /run/not-var
`)
	got := parseTmpfiles("x.conf", data)
	var paths []string
	for _, r := range got {
		paths = append(paths, r.path)
	}
	if want := []string{"lib/a", "lib/boot-only", "lib/tree", "lib/quoted"}; !slices.Equal(paths, want) {
		t.Fatalf("paths %q, want %q", paths, want)
	}
	ix := &tmpfilesIndex{exact: map[string]string{}, recursive: map[string]string{}}
	for _, r := range got {
		ix.exact[r.path] = r.source
		if r.recursive {
			ix.recursive[r.path] = r.source
		}
	}
	for p, want := range map[string]bool{"lib/a": true, "lib/a/child": false, "lib/tree/deep/file": true, "lib/adjust": false} {
		if _, ok := ix.covers(p); ok != want {
			t.Errorf("covers(%q) = %v, want %v", p, ok, want)
		}
	}
	if src, _ := ix.covers("lib/tree"); src != "x.conf:4" {
		t.Errorf("source %q", src)
	}
}

func FuzzParseTmpfiles(f *testing.F) {
	f.Add([]byte("d /var/lib/a 0755 root root -\nC /var/x\n"))
	f.Add([]byte("L+ \"/var/../etc\" - - - - /x\nd /var/\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, r := range parseTmpfiles("f.conf", data) {
			if r.path == "" || r.path == "." || r.path[0] == '/' || r.path == ".." || len(r.path) >= 3 && r.path[:3] == "../" {
				t.Fatalf("rule path %q escapes /var", r.path)
			}
		}
	})
}
