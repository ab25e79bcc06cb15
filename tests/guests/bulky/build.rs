//! Generates a few MiB of distinct functions, so the hot-swap benchmark can measure a
//! large module's compile time (like a JavaScript or Python handler's) with a Rust guest.

use std::fmt::Write;

const FUNCTIONS: u64 = 12000;

fn main() {
    let mut code = String::new();
    for i in 0..FUNCTIONS {
        let mix = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        writeln!(
            code,
            "#[inline(never)] fn f{i}(x: u64) -> u64 {{ let mut a = x ^ {i}; \
             for k in 0..{rounds} {{ a = a.rotate_left(k + {r}).wrapping_mul({mix}) ^ (a >> {s}); \
             if a % {m} == {i} % {m} {{ a = a.wrapping_add({mix}); }} }} a }}",
            rounds = i % 5 + 2,
            r = i % 13,
            s = i % 29 + 1,
            m = i % 17 + 3,
        )
        .unwrap();
    }
    write!(code, "static FUNCTIONS: [fn(u64) -> u64; {FUNCTIONS}] = [").unwrap();
    for i in 0..FUNCTIONS {
        write!(code, "f{i},").unwrap();
    }
    code.push_str("];\n");
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/generated.rs"), code).unwrap();
}
