//! Parity of the CPU ternary matmul with the scalar reference
//! (`bitnet_kernels::reference::ternary_matmul`), on every [`CpuPath`] this processor has, each
//! with 1 and 2 threads.
//!
//! Shapes: K ∈ {7, 96, 769, 2560, 6912} (not, partly and exactly multiples of the 128-column
//! block) × n ∈ {1, 3, 17, 64} × rows ∈ {1, 5, 130} (partial row groups), plus 6912 × 2560 at
//! n = 1 (the 2B-4T decode shape) and shapes above the threading threshold whose last chunk of
//! rows is partial. Weights are random with all three values (checked); activations are random
//! with -128 and 127 planted at both ends of every row, and saturation cases put every weight
//! at ±1 against every activation at -128 / 127. Accumulators must match bit for bit; the
//! quantize → matmul → dequantize pipeline through the backend must match the reference within
//! `1e-6 · max |y|` per row (float scaling only).
//!
//! Prints `parity: path <name>: <N> cases` per path and fails when an available path ran none.
//! `BITNET_REQUIRE_PATHS=avx2,avx512vnni` fails the run unless those paths are available.

use bitnet_kernels::cpu::CpuPath;
use bitnet_kernels::reference;
use bitnet_kernels::{Backend, CpuBackend, TernaryMatrix};
use std::collections::BTreeMap;

const KS: [usize; 5] = [7, 96, 769, 2560, 6912];
const NS: [usize; 4] = [1, 3, 17, 64];
const ROWS: [usize; 3] = [1, 5, 130];

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn ternary(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
    /// Random int8 rows of `k` with -128 and 127 at both ends of each row.
    fn activations(&mut self, n: usize, k: usize) -> Vec<i8> {
        let mut q: Vec<i8> = (0..n * k).map(|_| self.next() as u8 as i8).collect();
        for row in q.chunks_exact_mut(k) {
            row[0] = -128;
            row[k - 1] = 127;
            if k > 2 {
                row[1] = 127;
                row[k - 2] = -128;
            }
        }
        q
    }
    fn floats(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0)
            .collect()
    }
}

/// One matmul case: the matrix, the activations and the reference accumulators.
struct Case {
    name: String,
    w: TernaryMatrix,
    q: Vec<i8>,
    want: Vec<i32>,
}

impl Case {
    fn new(name: String, rows: usize, k: usize, values: Vec<i8>, q: Vec<i8>) -> Self {
        let w = TernaryMatrix::from_ternary(rows, k, &values, 1.0).expect("ternary values");
        let mut want = vec![0i32; q.len() / k * rows];
        reference::ternary_matmul(&w, &q, &mut want).expect("reference shapes");
        Case { name, w, q, want }
    }

    fn random(rng: &mut Rng, rows: usize, k: usize, n: usize) -> Self {
        let values = rng.ternary(rows * k);
        if rows * k >= 64 {
            let h = TernaryMatrix::from_ternary(rows, k, &values, 1.0)
                .unwrap()
                .histogram();
            assert!(h.minus > 0 && h.zero > 0 && h.plus > 0, "weights {h:?}");
        }
        let q = rng.activations(n, k);
        Case::new(format!("rows {rows} K {k} n {n}"), rows, k, values, q)
    }
}

/// Every backend under test with the cases it passed and every failure, by case name.
struct Parity {
    backends: Vec<(CpuPath, usize, CpuBackend)>,
    cases: BTreeMap<CpuPath, usize>,
    failures: Vec<String>,
}

impl Parity {
    fn new() -> Self {
        let mut backends = Vec::new();
        for path in CpuPath::available() {
            for threads in [1, 2] {
                let b = CpuBackend::with_path(path, threads).expect("available path");
                backends.push((path, threads, b));
            }
        }
        Parity {
            backends,
            cases: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Runs `ternary_matmul` on every backend and requires the reference's exact integers.
    fn check(&mut self, case: &Case) {
        for (path, threads, b) in &self.backends {
            *self.cases.entry(*path).or_default() += 1;
            let mut got = vec![i32::MIN; case.want.len()];
            let who = format!("path {} threads {threads} {}", path.name(), case.name);
            if let Err(e) = b.ternary_matmul(&case.w, &case.q, &mut got) {
                self.failures.push(format!("{who}: error {e}"));
                continue;
            }
            if let Some(i) = (0..got.len()).find(|&i| got[i] != case.want[i]) {
                let rows = case.w.rows();
                self.failures.push(format!(
                    "{who}: acc[{}, {}] = {}, expected {} ({} of {} differ)",
                    i / rows,
                    i % rows,
                    got[i],
                    case.want[i],
                    got.iter().zip(&case.want).filter(|(a, b)| a != b).count(),
                    got.len()
                ));
            }
        }
    }

    fn finish(self) {
        for path in CpuPath::available() {
            let n = self.cases.get(&path).copied().unwrap_or(0);
            println!("parity: path {}: {n} cases", path.name());
            assert!(n > 0, "path {} is available but ran no case", path.name());
        }
        assert!(
            self.failures.is_empty(),
            "{} failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

#[test]
fn ternary_matmul_matches_the_reference_on_every_path() {
    let mut parity = Parity::new();
    let mut rng = Rng(0x5EED);
    for k in KS {
        for n in NS {
            for rows in ROWS {
                parity.check(&Case::random(&mut rng, rows, k, n));
            }
        }
    }
    // The 2B-4T decode shape, and shapes split over threads whose last chunk (and last row
    // group) is partial.
    for (rows, k, n) in [
        (6912, 2560, 1),
        (1000, 769, 3),
        (130, 6912, 17),
        (2563, 2560, 1),
    ] {
        parity.check(&Case::random(&mut rng, rows, k, n));
    }
    // Saturation: every product at its extreme, for every accumulation scheme of the paths.
    for (k, n) in [(6912, 3), (769, 5), (128, 2)] {
        for (t, v) in [(1i8, -128i8), (-1, -128), (1, 127), (-1, 127)] {
            parity.check(&Case::new(
                format!("saturation t={t} q={v} rows 9 K {k} n {n}"),
                9,
                k,
                vec![t; 9 * k],
                vec![v; n * k],
            ));
        }
    }
    parity.finish();
}

#[test]
fn quantize_matmul_dequantize_matches_the_reference_after_scaling() {
    let mut parity = Parity::new();
    let mut rng = Rng(0xF10A7);
    for (rows, k, n) in [(130, 769, 3), (640, 2560, 1), (96, 2560, 17)] {
        let latent = rng.floats(rows * k);
        let w = TernaryMatrix::from_latent(rows, k, &latent).unwrap();
        let x = rng.floats(n * k);
        let run = |b: &dyn Backend| {
            let (mut q, mut s) = (vec![0i8; n * k], vec![0f32; n]);
            b.quantize_rows(&x, k, &mut q, &mut s)?;
            let mut acc = vec![0i32; n * rows];
            b.ternary_matmul(&w, &q, &mut acc)?;
            let mut y = vec![0f32; n * rows];
            b.dequantize_rows(&acc, w.beta(), &s, &mut y)?;
            Ok::<_, bitnet_kernels::KernelError>(y)
        };
        let want = run(&reference::ReferenceBackend).unwrap();
        for (path, threads, b) in &parity.backends {
            *parity.cases.entry(*path).or_default() += 1;
            let who = format!(
                "pipeline path {} threads {threads} rows {rows} K {k} n {n}",
                path.name()
            );
            let got = match run(b) {
                Ok(got) => got,
                Err(e) => {
                    parity.failures.push(format!("{who}: error {e}"));
                    continue;
                }
            };
            for (t, (g, r)) in got.chunks(rows).zip(want.chunks(rows)).enumerate() {
                let tol = 1e-6 * r.iter().fold(0f32, |m, v| m.max(v.abs()));
                if let Some(o) = (0..rows).find(|&o| (g[o] - r[o]).abs() > tol) {
                    parity
                        .failures
                        .push(format!("{who}: y[{t}, {o}] = {}, expected {}", g[o], r[o]));
                }
            }
        }
    }
    parity.finish();
}

#[test]
fn required_paths_are_available() {
    let Ok(list) = std::env::var("BITNET_REQUIRE_PATHS") else {
        return;
    };
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let path = CpuPath::from_name(name)
            .unwrap_or_else(|| panic!("BITNET_REQUIRE_PATHS: {name} is not a CPU path"));
        assert!(
            path.is_available(),
            "BITNET_REQUIRE_PATHS: this processor lacks the {name} path"
        );
    }
}
