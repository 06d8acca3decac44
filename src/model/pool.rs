//! Max-pooling over contiguous row ranges of a `[T, H]` tensor without dense `[ranges, T, H]`
//! masks (the reference implementation broadcasts such masks, which needs gigabytes for long
//! documents): a sparse table over the token axis answers any range max
//! with two row gathers, and gradients flow through the `maximum` ops back to the rows.

use tch::{Device, Kind, Tensor};

/// A sparse table over the rows of `states`: level `k` holds `max(states[t .. t + 2^k])` for
/// every `t` where that window fits, all levels stacked in one tensor.
pub struct RangeMax {
    table: Tensor,
    /// Row offset of each level inside `table`.
    level_offsets: Vec<i64>,
    rows: usize,
    device: Device,
}

impl RangeMax {
    /// Builds the levels needed for ranges of up to `max_len` rows (see [`RangeMax::max_len`]).
    /// Costs `O(T · log(max_len) · H)` memory.
    pub fn new(states: &Tensor, max_len: usize) -> RangeMax {
        let rows = states.size()[0] as usize;
        let mut level_offsets = vec![0i64];
        let mut offset = rows as i64;
        let mut width = 1usize;
        while width * 2 <= max_len.min(rows) {
            level_offsets.push(offset);
            offset += (rows - width * 2 + 1) as i64;
            width *= 2;
        }
        let level = |table: &Tensor, k: usize| {
            let n = (rows + 1 - (1 << k)) as i64;
            table.narrow(0, level_offsets[k], n)
        };
        let table = if states.requires_grad() {
            // Autograd needs each level as its own op output, so the levels are concatenated.
            let mut levels = vec![states.shallow_clone()];
            for k in 1..level_offsets.len() {
                let (prev, half) = (&levels[k - 1], 1i64 << (k - 1));
                let n = (rows + 1 - (1 << k)) as i64;
                levels.push(prev.narrow(0, 0, n).maximum(&prev.narrow(0, half, n)));
            }
            Tensor::cat(&levels, 0)
        } else {
            // Without gradients every level is written in place into one allocation: no copy
            // of the whole table for a concatenation.
            let table = Tensor::empty([offset, states.size()[1]], (states.kind(), states.device()));
            level(&table, 0).copy_(states);
            for k in 1..level_offsets.len() {
                let (prev, half) = (level(&table, k - 1), 1i64 << (k - 1));
                let n = (rows + 1 - (1 << k)) as i64;
                let _ = prev
                    .narrow(0, 0, n)
                    .maximum_out(&level(&table, k), &prev.narrow(0, half, n));
            }
            table
        };
        RangeMax {
            table,
            level_offsets,
            rows,
            device: states.device(),
        }
    }

    /// Number of rows of the pooled tensor.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Longest range [`RangeMax::query`] accepts (at least the `max_len` it was built for).
    pub fn max_len(&self) -> usize {
        (1 << self.level_offsets.len()) - 1
    }

    /// `[Q, H]`: row `q` is the element-wise max of rows `ranges[q].0 .. ranges[q].1`.
    ///
    /// # Panics
    /// On an empty range, a range past the last row, or one longer than [`RangeMax::max_len`]:
    /// callers build ranges from validated word-piece spans, so any of
    /// these is a bug, not bad input.
    pub fn query(&self, ranges: &[(usize, usize)]) -> Tensor {
        let mut first = Vec::with_capacity(ranges.len());
        let mut second = Vec::with_capacity(ranges.len());
        for &(start, end) in ranges {
            assert!(
                start < end && end <= self.rows,
                "range {start}..{end} outside 1..={} rows",
                self.rows
            );
            let level = (usize::BITS - 1 - (end - start).leading_zeros()) as usize;
            assert!(
                level < self.level_offsets.len(),
                "range {start}..{end} longer than the table allows"
            );
            let base = self.level_offsets[level];
            first.push(base + start as i64);
            second.push(base + (end - (1 << level)) as i64);
        }
        let first = Tensor::from_slice(&first).to_device(self.device);
        let second = Tensor::from_slice(&second).to_device(self.device);
        self.table
            .index_select(0, &first)
            .maximum(&self.table.index_select(0, &second))
    }
}

/// Element-wise max over groups of rows: `out[g] = max { src[i] : group[i] == g }` for
/// `g < groups`. Every group must have at least one row (an empty group would stay `-inf`).
/// One differentiable `scatter_reduce` op.
pub fn group_max(src: &Tensor, group: &Tensor, groups: i64) -> Tensor {
    let init = Tensor::full(
        [groups, src.size()[1]],
        f64::NEG_INFINITY,
        (Kind::Float, src.device()),
    );
    scatter_max(&init, src, group)
}

/// `acc` with row `group[i]` replaced by its element-wise max with `src[i]` (not in place, so
/// autograd sees it); chunked callers fold chunks into one accumulator.
pub fn scatter_max(acc: &Tensor, src: &Tensor, group: &Tensor) -> Tensor {
    // tch exposes `torch.scatter_reduce(..., include_self)` under the `internal_` prefix; the
    // plain `scatter_reduce` is the legacy add/multiply-only overload.
    acc.internal_scatter_reduce(0, &group.unsqueeze(1).expand_as(src), src, "amax", true)
}

/// `[N, H]`: row `n` is the sum of rows `indices[k·n .. k·n + k]` of `table` (`indices` flat,
/// `[k·N]`). One fused `embedding_bag` pass: it reads the `k` rows and writes the sum, where
/// `k` gathers and `k − 1` adds would each write a full `[N, H]` temporary (3x slower).
/// Differentiable in `table`.
pub fn row_sums(table: &Tensor, indices: &Tensor, k: i64) -> Tensor {
    let n = indices.size()[0] / k;
    let offsets = Tensor::arange_start_step(0, n * k, k, (Kind::Int64, indices.device()));
    const SUM: i64 = 0;
    let (sums, ..) = Tensor::embedding_bag(
        table,
        indices,
        &offsets,
        false,
        SUM,
        false,
        None::<Tensor>,
        false,
    );
    sums
}

/// In-place [`scatter_max`] into `acc`, for inference (no autograd).
pub fn scatter_max_(acc: &mut Tensor, src: &Tensor, group: &Tensor) {
    let _ = acc.internal_scatter_reduce_(0, &group.unsqueeze(1).expand_as(src), src, "amax", true);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dense reference: a `[Q, T, H]` masked max, as the reference implementation does it.
    fn dense(states: &Tensor, ranges: &[(usize, usize)]) -> Tensor {
        let t = states.size()[0];
        let rows: Vec<Tensor> = ranges
            .iter()
            .map(|&(s, e)| {
                let mask: Vec<f32> = (0..t as usize)
                    .map(|i| if i >= s && i < e { 0.0 } else { -1e30 })
                    .collect();
                (states + Tensor::from_slice(&mask).unsqueeze(1)).amax([0], false)
            })
            .collect();
        Tensor::stack(&rows, 0)
    }

    #[test]
    fn matches_dense_values_and_gradients() {
        tch::manual_seed(7);
        let t = 37usize;
        let base = Tensor::randn([t as i64, 6], (Kind::Float, Device::Cpu));
        let mut ranges = Vec::new();
        for s in 0..t {
            for e in (s + 1)..=t {
                if (s * 7 + e * 3) % 5 == 0 || e - s == 1 || (s == 0 && e == t) {
                    ranges.push((s, e));
                }
            }
        }
        let weights = Tensor::randn([ranges.len() as i64, 6], (Kind::Float, Device::Cpu));

        let x1 = base.copy().set_requires_grad(true);
        let fast = RangeMax::new(&x1, t).query(&ranges);
        (&fast * &weights).sum(Kind::Float).backward();

        let x2 = base.copy().set_requires_grad(true);
        let slow = dense(&x2, &ranges);
        (&slow * &weights).sum(Kind::Float).backward();

        assert!(fast.allclose(&slow, 0.0, 0.0, false), "values differ");
        // Without gradients the table is built in place: same values.
        let in_place = RangeMax::new(&base, t).query(&ranges);
        assert!(in_place.equal(&fast.detach()), "in-place table differs");
        assert!(
            x1.grad().allclose(&x2.grad(), 1e-6, 1e-6, false),
            "gradients differ"
        );
    }

    #[test]
    fn limited_levels_serve_short_ranges() {
        let x = Tensor::arange(20, (Kind::Float, Device::Cpu)).unsqueeze(1);
        let pool = RangeMax::new(&x, 5);
        assert_eq!(pool.max_len(), 7);
        let out = pool.query(&[(0, 1), (3, 7), (12, 19), (19, 20)]);
        assert_eq!(
            Vec::<f32>::try_from(out.squeeze()).unwrap(),
            vec![0.0, 6.0, 18.0, 19.0]
        );
    }

    #[test]
    fn row_sums_add_k_rows_and_backprop() {
        let table = Tensor::from_slice(&[1.0f32, 2.0, 10.0, 20.0, 100.0, 200.0])
            .view([3, 2])
            .set_requires_grad(true);
        let out = row_sums(&table, &Tensor::from_slice(&[0i64, 2, 1, 1, 2, 0]), 2);
        assert_eq!(
            Vec::<f32>::try_from(out.view([-1])).unwrap(),
            vec![101.0, 202.0, 20.0, 40.0, 101.0, 202.0]
        );
        out.sum(Kind::Float).backward();
        assert_eq!(
            Vec::<f32>::try_from(table.grad().view([-1])).unwrap(),
            vec![2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
        );
    }

    #[test]
    fn group_max_reduces_rows_and_backprops() {
        let src = Tensor::from_slice(&[1.0f32, 5.0, 3.0, 2.0, 4.0, 0.0])
            .view([3, 2])
            .set_requires_grad(true);
        let group = Tensor::from_slice(&[1i64, 0, 1]);
        let out = group_max(&src, &group, 2);
        assert_eq!(
            Vec::<f32>::try_from(out.view([-1])).unwrap(),
            vec![3.0, 2.0, 4.0, 5.0]
        );
        out.sum(Kind::Float).backward();
        assert_eq!(
            Vec::<f32>::try_from(src.grad().view([-1])).unwrap(),
            vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
        );
    }
}
