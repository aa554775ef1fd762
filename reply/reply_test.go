package reply

import "testing"

func TestString(t *testing.T) {
	for _, tc := range []struct {
		r    Reply
		want string
	}{
		{New(550, [3]int{5, 1, 1}, "no such user"), "550 5.1.1 no such user"},
		{Reply{Code: 250, Text: "ok"}, "250 ok"},
		{Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "one\ntwo"}, "451 4.3.0 one / two"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestParseRefusal(t *testing.T) {
	r, err := ParseRefusal(" 554 5.7.1 Relay access denied ")
	if err != nil || r != New(554, [3]int{5, 7, 1}, "Relay access denied") {
		t.Fatalf("ParseRefusal = %+v, %v", r, err)
	}
	for _, bad := range []string{"550 4.7.1 class differs", "250 2.0.0 not a refusal", "550 text only", "55 5.1.1 x", ""} {
		if _, err := ParseRefusal(bad); err == nil {
			t.Errorf("ParseRefusal(%q) accepted", bad)
		}
	}
}

func TestSplitEnhanced(t *testing.T) {
	for _, tc := range []struct {
		s    string
		code int
		e    [3]int
		rest string
		ok   bool
	}{
		{"5.1.1 user unknown", 550, [3]int{5, 1, 1}, "user unknown", true},
		{"4.1.1 class differs", 550, [3]int{}, "4.1.1 class differs", false},
		{"5.1 short", 550, [3]int{}, "5.1 short", false},
		{"5.1.1000 long", 550, [3]int{}, "5.1.1000 long", false},
		{"5..1 empty", 550, [3]int{}, "5..1 empty", false},
		{"Ok", 250, [3]int{}, "Ok", false},
	} {
		e, rest, ok := SplitEnhanced(tc.s, tc.code)
		if e != tc.e || rest != tc.rest || ok != tc.ok {
			t.Errorf("SplitEnhanced(%q) = %v %q %v, want %v %q %v", tc.s, e, rest, ok, tc.e, tc.rest, tc.ok)
		}
	}
}

func TestClasses(t *testing.T) {
	if !New(451, [3]int{4, 4, 1}, "x").Temporary() || New(550, [3]int{5, 1, 1}, "x").Temporary() {
		t.Error("Temporary")
	}
	if !New(354, [3]int{}, "go").Positive() || New(421, [3]int{4, 4, 2}, "x").Positive() {
		t.Error("Positive")
	}
	if !New(421, [3]int{4, 4, 2}, "x").Closing() || !New(554, [3]int{5, 0, 0}, "x").Permanent() {
		t.Error("Closing/Permanent")
	}
}

func TestParseEnhanced(t *testing.T) {
	for _, tc := range []struct {
		w  string
		e  [3]int
		ok bool
	}{
		{"5.1.1", [3]int{5, 1, 1}, true},
		{"2.0.0", [3]int{2, 0, 0}, true},
		{"4.999.999", [3]int{4, 999, 999}, true},
		{"3.0.0", [3]int{}, false},
		{"5.1", [3]int{}, false},
		{"5.1.1.1", [3]int{}, false},
		{"5.1.1000", [3]int{}, false},
		{"5..1", [3]int{}, false},
		{"5.+1.1", [3]int{}, false},
		{"a.b.c", [3]int{}, false},
	} {
		e, err := ParseEnhanced(tc.w)
		if (err == nil) != tc.ok || e != tc.e {
			t.Errorf("ParseEnhanced(%q) = %v, %v", tc.w, e, err)
		}
	}
}
