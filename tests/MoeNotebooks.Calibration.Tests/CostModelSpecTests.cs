using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration.Tests;

public class CostModelSpecTests
{
    private static string Scenario(string costModel) => $$"""
        {
          "model": { "name": "m", "layers": 2, "hiddenSize": 4096, "attentionHeads": 32, "ffnHiddenSize": 16384, "experts": 8, "topK": 2, "batch": 8, "sequenceLength": 2048 },
          "hardware": { "preset": "DGX-H100", "gpus": 8 },
          "strategy": { "ep": 1, "tp": 8, "pp": 1, "dp": 1, "derivation": "corrected" },
          "costModel": {{costModel}}
        }
        """;

    [Fact]
    public void Tile_wave_defaults_to_the_architecture_table_and_accepts_an_inline_one()
    {
        // Oracle: the preset's GPU is Hopper, so the hopper table; an inline table replaces it.
        var s = Scenario("\"tile-wave\"");
        var model = Config.Scenario.Parse(s).CreateCostModel();
        Assert.Equal("tile-wave(hopper)", model.Name);
        var inline = Config.Scenario.Parse(Scenario("""{"kind": "tile-wave", "tiles": {"name": "mine", "tiles": [{"rows": 128, "cols": 128, "relativeEfficiency": 1}], "achievableFraction": 0.5, "memoryEfficiency": 0.5, "launchSeconds": 0}}""")).CreateCostModel();
        Assert.Equal("tile-wave(mine)", inline.Name);
        Assert.True(Config.Scenario.Parse(s).Evaluate().TotalSeconds > 0);
    }

    [Theory]
    [InlineData("""{"kind": "tile-wave", "tile": "hopper"}""", "costModel.tile", "did you mean \"tiles\"")]
    [InlineData("""{"kind": "tile-wave", "gemm": "x.csv"}""", "costModel.gemm", "applies only to kind \"calibrated\"")]
    [InlineData("""{"kind": "roofline-ideal", "tiles": "hopper"}""", "costModel.tiles", "applies only to kind \"tile-wave\"")]
    [InlineData("""{"kind": "tile-wave", "tiles": "volta"}""", "costModel.tiles", "known: ampere, blackwell, cdna3, hopper")]
    [InlineData("""{"kind": "calibrated"}""", "costModel.gemm", "needs \"gemm\"")]
    [InlineData("\"calibrated\"", "costModel.gemm", "needs \"gemm\"")]
    [InlineData("""{"kind": "calibrated", "gemm": "no-such-file.csv"}""", "costModel.gemm", "file not found")]
    [InlineData("""{"kind": "calibrated", "communication": "no-such.csv"}""", "costModel.communication", "file not found")]
    [InlineData("""{"kind": "calibrated", "gpu": "H100-80GB", "communication": "no-such.csv"}""", "costModel.gpu", "give \"gemm\" too")]
    [InlineData("""{"kind": "calibrated", "gemm": "x.csv", "neighbors": -1}""", "costModel.neighbors", "must be >= 0")]
    public void Bad_cost_model_options_name_the_field(string costModel, string field, string fragment)
    {
        var e = Assert.Throws<ConfigException>(() => Config.Scenario.Parse(Scenario(costModel), "/tmp/scenario.json"));
        Assert.Equal(field, e.Field);
        Assert.Contains(fragment, e.Message);
    }

    [CalibrationDataFact]
    public void Calibrated_scenarios_read_the_shared_files_and_filter_by_gpu_and_system()
    {
        // Oracle: the shared files hold two GPUs and several systems, so each must be named; then the model is fitted.
        var e = Assert.Throws<ConfigException>(() => Config.Scenario.Parse(Scenario("""{"kind": "calibrated", "gemm": "$calibration/gemm_measured_public.csv"}""")));
        Assert.Equal("costModel.gpu", e.Field);
        Assert.Contains("\"A100-80GB\", \"H100-80GB\"", e.Message);
        var bad = Assert.Throws<ConfigException>(() => Config.Scenario.Parse(Scenario("""{"kind": "calibrated", "gemm": "$calibration/gemm_measured_public.csv", "gpu": "V100"}""")));
        Assert.Contains("matches no row", bad.Message);
        var scenario = Config.Scenario.Parse(Scenario("""
            {"kind": "calibrated", "gemm": "$calibration/gemm_measured_public.csv", "gpu": "H100-80GB",
             "communication": "$calibration/comm_measured_public.csv", "system": "DGX H100 (vidur h100_dgx)"}
            """));
        var evaluation = scenario.Evaluate();
        Assert.IsType<CalibratedCompute>(evaluation.Cost.Compute);
        Assert.IsType<CalibratedCommunication>(evaluation.Cost.Communication);
        Assert.True(evaluation.TotalSeconds > 0);
    }
}
