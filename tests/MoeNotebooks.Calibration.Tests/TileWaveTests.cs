using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Calibration.Tests;

public class TileWaveTests
{
    private static readonly GpuSpec Toy = new GpuSpec("toy", new Dictionary<string, double> { ["bf16"] = 4e12 }, 1e12, 1e9, "test") { SmCount = 4 };
    private static readonly TileWaveTable OneTile = new("one-tile", [new GemmTile(128, 128, 1.0)], 1.0, 1.0, 0, 0, "test");

    [Fact]
    public void H100_4096_cube_takes_four_waves_of_256x128_tiles()
    {
        // Oracle: hand derivation. 256x128 tiles: (4096/256)(4096/128) = 512 tiles, ceil(512/132) = 4 waves.
        // One tile on one SM: 2*256*128*4096 FLOP at 794.5e12/132 FLOP/s (MAMF); 4 waves = 178.39 us.
        // 128x128 would need 8 waves at 0.9 efficiency (198 us), so 256x128 wins. HBM: 3*4096^2*2 B / (3.35e12*0.85) = 35.3 us.
        // Total = 178.39 + 5 (launch) = 183.39 us.
        var gpu = HardwareCatalog.Get("H100-SXM").Gpu;
        var model = new TileWaveCompute(gpu, TileWaveTable.Get("hopper"));
        var e = model.Estimate(new MatmulShape(4096, 4096, 4096), "bf16", 2);
        Assert.Equal((256, 128), (e.Tile.Rows, e.Tile.Cols));
        Assert.Equal(512, e.TileCount);
        Assert.Equal(4, e.Waves);
        Assert.Equal(4 * 2.0 * 256 * 128 * 4096 * 132 / 794.5e12, e.ComputeSeconds, 1e-12);
        Assert.Equal(178.39e-6, e.ComputeSeconds, 0.01e-6);
        Assert.Equal(3.0 * 4096 * 4096 * 2 / (3.35e12 * 0.85), e.MemorySeconds, 1e-12);
        Assert.Equal(183.39e-6, e.Seconds, 0.01e-6);
        Assert.False(e.MemoryBound);
    }

    [Fact]
    public void One_tile_more_than_the_SMs_costs_a_whole_wave()
    {
        // Oracle: hand derivation on a 4-SM toy GPU, one 128x128 tile kind, 1 TFLOP/s per SM.
        // 256x256: 4 tiles = 1 wave of 2*128*128*k FLOP. 384x256: 6 tiles = 2 waves: 1.5x the work, 2x the time.
        var model = new TileWaveCompute(Toy, OneTile);
        var oneWave = model.Estimate(new MatmulShape(256, 1024, 256), "bf16", 2);
        var twoWaves = model.Estimate(new MatmulShape(384, 1024, 256), "bf16", 2);
        Assert.Equal(1, oneWave.Waves);
        Assert.Equal(2, twoWaves.Waves);
        Assert.Equal(2.0 * 128 * 128 * 1024 / 1e12, oneWave.ComputeSeconds, 1e-15);
        Assert.Equal(2 * oneWave.ComputeSeconds, twoWaves.ComputeSeconds, 1e-15);
        Assert.Equal(0.5, twoWaves.LastWaveFill(4));
    }

    [Fact]
    public void A_row_past_the_tile_edge_costs_a_whole_tile_and_batches_multiply_tiles()
    {
        // Oracle: tile quantization by hand. m = 129 needs ceil(129/128) = 2 tile rows: same time as m = 256.
        var model = new TileWaveCompute(Toy, OneTile);
        Assert.Equal(model.Estimate(new MatmulShape(256, 512, 128), "bf16", 2).ComputeSeconds,
            model.Estimate(new MatmulShape(129, 512, 128), "bf16", 2).ComputeSeconds);
        Assert.Equal(2, model.Estimate(new MatmulShape(129, 512, 128), "bf16", 2).TileCount);
        // Batch 3 of a 2-tile GEMM: 6 tiles, 2 waves on 4 SMs.
        var batched = model.Estimate(new MatmulShape(256, 512, 128, Batch: 3), "bf16", 2);
        Assert.Equal(6, batched.TileCount);
        Assert.Equal(2, batched.Waves);
    }

    [Fact]
    public void Skinny_GEMMs_are_memory_bound_plus_launch()
    {
        // Oracle: m = 1: 2*1*8192*8192 FLOP is nothing; HBM streams (8192 + 8192^2 + 8192) x 2 B at 3.35e12 x 0.85.
        var gpu = HardwareCatalog.Get("H100-SXM").Gpu;
        var table = TileWaveTable.Get("hopper");
        var e = new TileWaveCompute(gpu, table).Estimate(new MatmulShape(1, 8192, 8192), "bf16", 2);
        Assert.True(e.MemoryBound);
        Assert.Equal((8192.0 + 8192.0 * 8192 + 8192) * 2 / (3.35e12 * 0.85) + 5e-6, e.Seconds, 1e-12);
    }

    [Fact]
    public void A_GPU_without_an_SM_count_is_a_config_error_naming_the_field()
    {
        var gpu = new GpuSpec("no-sms", new Dictionary<string, double> { ["bf16"] = 1e12 }, 1e12, 1e9, "test");
        var e = Assert.Throws<ConfigException>(() => new TileWaveCompute(gpu, OneTile));
        Assert.Equal("hardware.gpu.smCount", e.Field);
    }

    [Fact]
    public void Every_preset_is_sourced_and_has_a_tile_table_and_SMs()
    {
        // Oracle: the catalog's own promise: every number with a source, tile/wave usable on every GPU.
        foreach (var name in new[] { "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "MI300X", "DGX-A100", "DGX-H100", "DGX-B200" })
        {
            var hw = HardwareCatalog.Get(name);
            Assert.False(string.IsNullOrWhiteSpace(hw.Source), name);
            Assert.NotNull(hw.Gpu.SmCount);
            Assert.NotNull(TileWaveTable.For(hw.Gpu));
            foreach (var (dtype, achievable) in hw.Gpu.AchievableFlopsPerSecond) Assert.True(achievable <= hw.Gpu.PeakFor(dtype), $"{name} {dtype}");
        }
        // DGX H100 as the issue describes it: 8 GPUs per node, NVLink4 450 GB/s, one 400 Gb/s NIC per GPU.
        var dgx = HardwareCatalog.Get("dgx-h100");
        Assert.Equal(8, dgx.GpusPerNode);
        Assert.Equal(450e9, dgx.IntraNode.BytesPerSecond);
        Assert.Equal(400e9 / 8, dgx.InterNode.BytesPerSecond);
        Assert.Equal(132, dgx.Gpu.SmCount);
    }
}
