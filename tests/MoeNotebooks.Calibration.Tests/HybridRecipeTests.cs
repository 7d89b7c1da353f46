using MoeNotebooks.Calibration;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>The Nemotron-3 rows' precision recipe: the NVFP4 recipe's BF16 tail layers (issue 14, hybrid rows).</summary>
public class HybridRecipeTests
{
    private static ModernSuiteResult Suite => ModernSuite.Run(RealData.Data);

    [Fact]
    public void Mix_weights_every_part_by_the_layer_share()
    {
        // Oracle (hand): a = 10 s dense GEMMs + 2 s DP, b = 30 s dense GEMMs + 2 s DP, w = 14 / 88:
        // 10 + 14/88 x 20 = 13.1818... s dense, DP 2 s, visits of a, operations summed.
        var a = new ModernStep(StepParts.Zero with { DenseGemm = 10, ExpertGemm = 4 }, 2, 704, 100, 1);
        var b = new ModernStep(StepParts.Zero with { DenseGemm = 30, ExpertGemm = 8 }, 2, 704, 50, 3);
        var m = ModernStep.Mix(a, b, 14.0 / 88);
        Assert.Equal(10 + 14.0 / 88 * 20, m.Parts.DenseGemm, 12);
        Assert.Equal(4 + 14.0 / 88 * 4, m.Parts.ExpertGemm, 12);
        Assert.Equal(2, m.DataParallelSeconds, 12);
        Assert.Equal(1 + 14.0 / 88 * 2, m.BubbleSeconds, 12);
        Assert.Equal((704.0, 150L), (m.LayerMicrobatches, m.SimulatedOperations));
    }

    [Fact]
    public void The_super_nvfp4_recipe_keeps_its_last_14_of_88_layers_in_bf16()
    {
        // Oracle: Megatron-Bridge mixed_precision.py nemotron_3_super_bf16_with_nvfp4_mixed (num_layers_at_end_in_bf16 14),
        // as the data file carries it; the other families' NVFP4 recipes and every non-NVFP4 row keep no BF16 tail.
        var catalog = ModernArchitecture.Catalog;
        Assert.Equal(14, catalog["Nemotron-3-Super"].Nvfp4LayersAtEndInBf16);
        Assert.Equal(88, catalog["Nemotron-3-Super"].Layers);
        Assert.All(catalog.Values.Where(a => a.Family != "Nemotron-3-Super"), a => Assert.Equal(0, a.Nvfp4LayersAtEndInBf16));
    }

    [Fact]
    public void A_bf16_tail_outside_the_layers_is_refused_with_field_and_value()
    {
        // Oracle: the loader's rule (0 <= layers < the model's 88 layers), with the field path and the value in the message.
        static string Json(string tail) =>
            "{\"source\": \"test\", \"models\": [{\"family\": \"Nemotron-3-Super\", \"preset\": \"nemotron3-super\", \"source\": \"s\", \"nvfp4LayersAtEndInBf16\": " + tail + "}]}";
        var ok = ModernArchitecture.Parse(Json("{\"layers\": 14, \"source\": \"t\"}"), "test.json");
        Assert.Equal(14, ok["Nemotron-3-Super"].Nvfp4LayersAtEndInBf16);
        foreach (var bad in new[] { "88", "-1" })
        {
            var e = Assert.Throws<ConfigException>(() => ModernArchitecture.Parse(Json($"{{\"layers\": {bad}, \"source\": \"t\"}}"), "test.json"));
            Assert.Contains("models[0].nvfp4LayersAtEndInBf16.layers", e.Message);
            Assert.Contains(bad, e.Message);
        }
        Assert.Throws<ConfigException>(() => ModernArchitecture.Parse(Json("{\"layers\": 14}"), "test.json"));   // a source is required
        Assert.Throws<ConfigException>(() => ModernArchitecture.Parse(Json("{\"layers\": 14, \"source\": \"t\", \"extra\": 1}"), "test.json"));
    }

    [CalibrationDataFact]
    public void A_super_nvfp4_row_mixes_the_nvfp4_and_bf16_steps_in_the_tail_share()
    {
        // Oracle (hand): the row's launch step is the NVFP4 step with 14 of its 88 layers priced at BF16, i.e.
        // (74 / 88) NVFP4 + (14 / 88) BF16 part by part, the two steps predicted here on their own from the same slice.
        var row = Suite.Rows.Single(x => x.Row.Run.Id == "mbridge_26.08_Nemotron_3_Super_DGX-GB300_64g_NVFP4_tp1pp1ep64").Row;
        var s = row.Scenario;
        Assert.Equal(14, s.Bf16TailLayers);
        var nvfp4 = (s.Preset! with { Precision = s.Recipe }).Validated();
        var bf16 = (s.Preset! with { Precision = PrecisionRecipe.Get("bf16") }).Validated();
        var p = ModernPredictor.Datasheet;
        var q = p.Predict(s, s.Hardware, s.VirtualStages, true, nvfp4, asLaunched: true).Parts;
        var b = p.Predict(s, s.Hardware, s.VirtualStages, true, bf16, asLaunched: true).Parts;
        var launch = row.Steps[ModernRung.Launch].Step.Parts;
        Assert.True(b.DenseGemm > 1.5 * q.DenseGemm, $"BF16 dense GEMMs {b.DenseGemm:F3} s vs NVFP4 {q.DenseGemm:F3} s");   // non-vacuous
        Assert.Equal(74.0 / 88 * q.DenseGemm + 14.0 / 88 * b.DenseGemm, launch.DenseGemm, 9);
        Assert.Equal(74.0 / 88 * q.ExpertGemm + 14.0 / 88 * b.ExpertGemm, launch.ExpertGemm, 9);
        Assert.Equal(74.0 / 88 * q.Total + 14.0 / 88 * b.Total, launch.Total, 9);
        // The same family at MXFP8 and the other families at NVFP4 keep their recipe everywhere.
        Assert.All(Suite.Rows.Where(x => x.Row.Run.Precision != TrainingPrecision.Nvfp4 || x.Row.Run.Family != "Nemotron-3-Super"),
            x => Assert.Equal(0, x.Row.Scenario.Bf16TailLayers));
    }
}
