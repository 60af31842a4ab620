package median

import "testing"

func TestOf(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := Of(tt.in); got != tt.want {
			t.Errorf("Of(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
