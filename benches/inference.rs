//! Criterion benchmarks of the per-request CPU work: decoding and preprocessing, the forward
//! pass at several batch sizes, one image end to end, and JWT verification.

use std::hint::black_box;
use std::io::Cursor;

/// The binaries run on mimalloc; the benchmarks measure what they run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use image::{imageops, DynamicImage, ImageFormat, Rgb, RgbImage};
use mnist_api::auth::{Secret, Tokens};
use mnist_api::data::IMAGE_PIXELS;
use mnist_api::inference::forward;
use mnist_api::preprocess::{prepare, ImageLimits};
use mnist_api::weights;

const SEVEN: &[u8] = include_bytes!("../tests/fixtures/seven.png");

fn net() -> weights::Loaded {
    // As in the server (see src/main.rs): one core per forward pass. Set before the first
    // rayon or candle call, which read it.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    weights::load(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/weights/mnist_cnn.safetensors"
        )),
        &candle_core::Device::Cpu,
    )
    .expect("committed weights")
}

/// A 640×480 JPEG "photo": the seven written dark on uneven, noisy paper.
fn photo() -> Vec<u8> {
    let digit = image::load_from_memory(SEVEN).unwrap().to_luma8();
    let digit = imageops::resize(&digit, 300, 300, imageops::FilterType::CatmullRom);
    let mut img = RgbImage::from_fn(640, 480, |x, y| {
        let noise = ((x * 7919 + y * 104_729) % 23) as u8;
        let light = 200u8.saturating_add(((x + y) / 40) as u8) - noise;
        Rgb([light, light, light.saturating_sub(10)])
    });
    for (x, y, p) in digit.enumerate_pixels() {
        if p.0[0] > 40 {
            let ink = 255 - p.0[0];
            img.put_pixel(x + 170, y + 90, Rgb([ink / 3, ink / 3, ink / 2]));
        }
    }
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

fn preprocessing(c: &mut Criterion) {
    let _ = net();
    let limits = ImageLimits::default();
    let jpeg = photo();
    let mut g = c.benchmark_group("decode+preprocess");
    g.bench_function("png 28x28", |b| {
        b.iter(|| prepare(black_box(SEVEN), limits).unwrap())
    });
    g.bench_function("jpeg 640x480 photo", |b| {
        b.iter(|| prepare(black_box(&jpeg), limits).unwrap())
    });
    g.finish();
}

fn forward_pass(c: &mut Criterion) {
    let loaded = net();
    let input = prepare(SEVEN, ImageLimits::default()).unwrap().input;
    let mut g = c.benchmark_group("forward");
    for batch in [1usize, 16, 64] {
        let pixels: Vec<f32> = input
            .iter()
            .copied()
            .cycle()
            .take(batch * IMAGE_PIXELS)
            .collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &n| {
            b.iter(|| forward(&loaded.net, black_box(&pixels), n).unwrap())
        });
    }
    g.finish();
}

fn one_image(c: &mut Criterion) {
    let loaded = net();
    let limits = ImageLimits::default();
    c.bench_function("png 28x28 to probabilities", |b| {
        b.iter(|| {
            let p = prepare(black_box(SEVEN), limits).unwrap();
            forward(&loaded.net, &p.input, 1).unwrap()
        })
    });
}

fn jwt(c: &mut Criterion) {
    let tokens = Tokens::new(&Secret::new(b"bench secret".to_vec()), 3600);
    let token = tokens.issue("alice").unwrap();
    let header = format!("Bearer {token}");
    c.bench_function("jwt verify", |b| {
        b.iter(|| tokens.verify_header(Some(black_box(&header))).unwrap())
    });
}

criterion_group!(benches, preprocessing, forward_pass, one_image, jwt);
criterion_main!(benches);
