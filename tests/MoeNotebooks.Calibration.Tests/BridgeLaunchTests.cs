using MoeNotebooks.Analysis;
using MoeNotebooks.Calibration;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>Issue 14: each Megatron-Bridge row as launched (data/validation/megatron-bridge-launches.json).</summary>
public class BridgeLaunchTests
{
    private static IReadOnlyList<ModernRun> Runs => ModernRun.Read(RealData.Data.PathOf(ModernSuite.File));

    private static ModernScenario ScenarioOf(string id) =>
        ModernPredictor.ScenarioOf(Runs.Single(r => r.Id == id)).Scenario ?? throw new InvalidOperationException($"{id} is not expressible");

    [Fact]
    public void The_file_loads_and_every_entry_names_its_source()
    {
        // Oracle: the file's own contract: every entry read from NVIDIA-NeMo/Megatron-Bridge's performance configs at
        // a full commit, and every row looked for and not found says why.
        var c = BridgeLaunchCatalog.Published;
        Assert.True(c.Launches.Count >= 15, $"{c.Launches.Count} entries");
        Assert.All(c.Launches, l =>
        {
            Assert.Equal("NVIDIA-NeMo/Megatron-Bridge", l.Source.Repo);
            // The performance launcher's configs (scripts/performance/configs/<family>/*_workload_base_configs.py) or, for the
            // Nemotron-3 Super rows whose layouts only the newer flat recipes give, src/megatron/bridge/perf_recipes/<family>/*.py.
            if (l.Source.Path.StartsWith("scripts/performance/configs/", StringComparison.Ordinal))
            {
                Assert.EndsWith("workload_base_configs.py", l.Source.Path);
                Assert.Contains("_PRETRAIN_CONFIG_", l.Config);
            }
            else
            {
                Assert.StartsWith("src/megatron/bridge/perf_recipes/", l.Source.Path);
                Assert.EndsWith(".py", l.Source.Path);
                Assert.Contains("_pretrain_", l.Config);
            }
            Assert.Matches("^[0-9a-f]{40}$", l.Source.Commit);
            // Blackwell entries were read for the carried rows' releases; a GPU no carried row ran (H100) names none and
            // applies by layout only.
            if (l.Gpu != "h100") Assert.NotEmpty(l.Releases);
        });
        Assert.NotEmpty(c.NotFound);
        Assert.All(c.NotFound, n => Assert.False(string.IsNullOrWhiteSpace(n.Why)));
    }

    private const string Entry = """
        { "family": "X", "gpu": "gb200", "precision": "bf16", "releases": ["26.04.01"], "config": "C",
          "layout": { "tp": 1, "pp": 1, "ep": 8, "microBatch": 1, "globalBatch": 64 },
          "moeA2aOverlap": false, "dispatcher": "DISPATCHER",
          "source": { "repo": "NVIDIA-NeMo/Megatron-Bridge", "path": "scripts/performance/configs/x/x_workload_base_configs.py", "commit": "COMMIT" } }
        """;

    private static string File(string entry) => $$"""
        { "source": "s", "mapping": { "moeA2aOverlap": "a", "dispatcher": "d", "ppLayout": "p", "recomputeModules": "r", "cudaGraph": "c" },
          "launches": [ {{entry}} ], "notFound": [] }
        """;

    [Theory]
    [InlineData("nvshmem", "0123456789012345678901234567890123456789", "launches[0].dispatcher", "\"nvshmem\"")]
    [InlineData("hybridep", "abc", "launches[0].source.commit", "\"abc\"")]
    public void Bad_values_are_rejected_naming_field_and_value(string dispatcher, string commit, string field, string value)
    {
        // Oracle: the project's rule for data files (ConfigException names the field, the value and what is valid).
        var e = Assert.Throws<ConfigException>(() => BridgeLaunchCatalog.Parse(File(Entry.Replace("DISPATCHER", dispatcher).Replace("COMMIT", commit)), "test.json"));
        Assert.Contains(field, e.Message);
        Assert.Contains(value, e.Message);
        var good = BridgeLaunchCatalog.Parse(File(Entry.Replace("DISPATCHER", "hybridep").Replace("COMMIT", new string('a', 40))), "test.json");
        Assert.Equal(AllToAllImplementation.DeepEpNormal, good.Launches[0].AllToAll);
        var unknown = Assert.Throws<ConfigException>(() => BridgeLaunchCatalog.Parse(File(Entry.Replace("DISPATCHER", "deepep").Replace("COMMIT", new string('a', 40)).Replace("\"config\"", "\"cuda_graph\": 1, \"config\"")), "test.json"));
        Assert.Contains("cuda_graph", unknown.Message);
    }

    [Fact]
    public void A_run_of_a_release_the_file_does_not_name_takes_the_config_with_its_layout()
    {
        // Oracle: BridgeLaunchCatalog.For's rule, by cases. An entry read for 26.04.01 (GPT-OSS-120B on GB200, EP 64, MBS 4,
        // GBS 1280) applies to a run of that release; to a run of another release only when the run's layout is the
        // entry's (then marked ByLayout and said so); never to a run with no release (it need not be NVIDIA's launch);
        // a release listed as not found keeps plain settings. An entry naming no release (H100) applies by layout only.
        var entry = Entry.Replace("\"X\"", "\"GPT-OSS-120B\"").Replace("\"ep\": 8, \"microBatch\": 1, \"globalBatch\": 64", "\"ep\": 64, \"microBatch\": 4, \"globalBatch\": 1280")
            .Replace("DISPATCHER", "alltoall").Replace("COMMIT", new string('a', 40));
        var h100 = entry.Replace("\"gb200\"", "\"h100\"").Replace("[\"26.04.01\"]", "[]").Replace("\"C\"", "\"H\"");
        var notFound = """{ "family": "GPT-OSS-120B", "gpu": "gb200", "precision": "bf16", "release": "25.11", "why": "stored MBS 4, the row MBS 1" }""";
        var file = File(entry + ", " + h100).Replace("\"notFound\": []", $"\"notFound\": [ {notFound} ]");
        var c = BridgeLaunchCatalog.Parse(file, "test.json");
        ModernRun Run(string system, string release, int mbs = 4) =>
            TrainingPredictor.RunOf(new TrainingRunRequest("gpt-oss-120b", system, 64, "bf16", 1280, mbs, EP: 64, Release: release));
        var (named, _) = c.For(Run("GB200", "26.04.01"));
        Assert.False(named!.ByLayout);
        var (other, _) = c.For(Run("GB200", "26.08"));
        Assert.True(other!.ByLayout);
        Assert.Equal("C", other.Config);
        Assert.Contains("matched by layout", other.Describe());
        var (none, whyNone) = c.For(Run("GB200", ""));
        Assert.Null(none);
        Assert.Contains("not collected", whyNone);
        var (listed, whyListed) = c.For(Run("GB200", "25.11"));
        Assert.Null(listed);
        Assert.Contains("stored MBS 4", whyListed);
        var (mismatch, whyMismatch) = c.For(Run("GB200", "26.08", mbs: 2));
        Assert.Null(mismatch);
        Assert.Contains("has its layout", whyMismatch);
        var (hopper, _) = c.For(Run("H100 (DGX-H100)", "25.11"));
        Assert.Equal("H", hopper!.Config);
        Assert.True(hopper.ByLayout);
        // Two entries naming no release with one layout cannot be told apart: refused, naming the layout.
        var twice = Assert.Throws<ConfigException>(() => BridgeLaunchCatalog.Parse(File(h100 + ", " + h100.Replace("\"H\"", "\"H2\"")), "test.json"));
        Assert.Contains("layout", twice.Message);
        Assert.Contains("EP64", twice.Message);
    }

    [Fact]
    public void An_h100_run_with_a_stored_h100_layout_takes_that_config_by_hand()
    {
        // Oracle (by hand from deepseek_workload_base_configs.py @ 0426418): DEEPSEEK_V3_PRETRAIN_CONFIG_H100_BF16_V1 runs
        // 1024 GPUs at TP 2, PP 8, VP 4, EP 64, MBS 1, GBS 8192 with HybridEP, no all-to-all overlap, selective recompute of
        // mla_up_proj and mlp, and the pipeline layout Et|(tt|)*30mL. The H100 entries name no release.
        var run = TrainingPredictor.RunOf(new TrainingRunRequest("deepseek-v3", "H100 (DGX-H100)", 1024, "bf16", 8192, 1, TP: 2, PP: 8, VP: 4, EP: 64, Release: "25.11"));
        var (launch, _) = BridgeLaunchCatalog.Published.For(run);
        Assert.Equal("DEEPSEEK_V3_PRETRAIN_CONFIG_H100_BF16_V1", launch!.Config);
        Assert.True(launch.ByLayout);
        Assert.Empty(launch.Releases);
        Assert.Equal(AllToAllImplementation.DeepEpNormal, launch.AllToAll);
        Assert.Equal(MoeAllToAllOverlap.None, launch.Overlap);
        Assert.Equal(RecomputeModules.MlaUpProj | RecomputeModules.Mlp, launch.Recomputes);
        Assert.Equal("Et|(tt|)*30mL", launch.PpLayout);
        // The same layout at GBS 16384 is V2's; another global batch is no stored config's.
        Assert.Equal("DEEPSEEK_V3_PRETRAIN_CONFIG_H100_BF16_V2", BridgeLaunchCatalog.Published.For(run with { GlobalBatch = 16384 }).Launch!.Config);
        Assert.Null(BridgeLaunchCatalog.Published.For(run with { GlobalBatch = 4096 }).Launch);
    }

    [CalibrationDataFact]
    public void A_row_with_all_to_all_overlap_maps_to_the_1f1b_overlap_by_hand()
    {
        // Oracle (by hand from gpt_oss_workload_base_configs.py @ 07eea52): GPT_OSS_120B_PRETRAIN_CONFIG_GB200_BF16_V2 =
        // GB200_BF16_V1 (EP 64, MBS 4, recompute_modules ["layernorm", "moe_act"]) with GBS 1280 and moe_a2a_overlap=True;
        // no moe_flex_dispatcher_backend, so Megatron-Core's alltoall dispatcher (NCCL). PP 1: the slice holds the overlap.
        var s = ScenarioOf("mbridge_26.04.01_GPT_OSS_120B_DGX-GB200_64g_BF16_tp1pp1ep64");
        Assert.Equal("GPT_OSS_120B_PRETRAIN_CONFIG_GB200_BF16_V2", s.Launch!.Config);
        var st = ModernPredictor.SliceStrategy(s, 1, ModernPredictor.SliceMicrobatches1, s.LaunchOverlap);
        Assert.Equal(MoeAllToAllOverlap.OneFOneB, st.MoeAllToAllOverlap);
        Assert.Equal((64, 1, 1), (st.EP, st.TP, st.PP));
        Assert.Equal(AllToAllImplementation.Nccl, s.LaunchAllToAll);
        Assert.Equal(RecomputeModules.Layernorm | RecomputeModules.MoeAct, s.LaunchRecomputeModules);   // priced, no longer listed
        Assert.DoesNotContain(s.Launch.Unexpressed(), u => u.Contains("layernorm"));
        Assert.True(ModernSuite.ChangesPricing(s));
    }

    [CalibrationDataFact]
    public void A_row_without_overlap_maps_to_its_dispatcher_only_by_hand()
    {
        // Oracle (by hand from qwen3_workload_base_configs.py @ 01b2977): QWEN3_235B_A22B_PRETRAIN_CONFIG_GB200_FP8_MX_V2 =
        // GB200_FP8_CS_V1 (PP 8, hybridep, CUDA graphs transformer_engine [attn, moe_router, moe_preprocess]) with 256 GPUs,
        // EP 32, GBS 8192 and VP 3; moe_a2a_overlap left at WorkloadBaseConfig's False. HybridEP -> DeepEP normal.
        var s = ScenarioOf("mbridge_26.04.01_Qwen3_235B_a22B_DGX-GB200_256g_MXFP8_tp1pp8ep32");
        Assert.Equal("QWEN3_235B_A22B_PRETRAIN_CONFIG_GB200_FP8_MX_V2", s.Launch!.Config);
        Assert.Equal(MoeAllToAllOverlap.None, s.LaunchOverlap);
        Assert.Equal(MoeAllToAllOverlap.None, ModernPredictor.SliceStrategy(s, 2, 2, s.LaunchOverlap).MoeAllToAllOverlap);
        Assert.Equal(AllToAllImplementation.DeepEpNormal, s.LaunchAllToAll);
        Assert.Contains(s.Launch.Unexpressed(), u => u.Contains("transformer_engine [attn, moe_router, moe_preprocess]"));
        // A row whose published layout differs from the stored config keeps plain settings and says why.
        var kimi = ScenarioOf("mbridge_26.04.01_Kimi_K2_DGX-GB300_256g_MXFP8_tp1pp4ep64");
        Assert.Null(kimi.Launch);
        Assert.Contains("MBS 1", kimi.LaunchNote);
    }

    [CalibrationDataFact]
    public void Every_expressible_moe_row_was_looked_up_and_found_or_listed_with_why()
    {
        // Oracle: the CSV's expressible Megatron-Bridge MoE rows: each has an entry or a notFound line in the data file
        // (none falls through as "not collected"), and every entry names only releases of rows that exist.
        // The hybrid Nemotron-3 rows are MoE rows too (their entries: nemotron_3_workload_base_configs.py).
        var moe = Runs.Where(r => r.Framework == ModernFramework.MegatronBridge && r.IsMoe)
            .Select(r => ModernPredictor.ScenarioOf(r).Scenario).OfType<ModernScenario>().ToArray();
        Assert.True(moe.Length >= 50, $"{moe.Length} rows");
        Assert.All(moe, s => Assert.True(s.Launch is not null || s.LaunchNote!.StartsWith("launch settings not found"), $"{s.Run.Id}: {s.LaunchNote}"));
        foreach (var l in BridgeLaunchCatalog.Published.Launches)
            foreach (var release in l.Releases)
                Assert.Contains(moe, s => s.Launch == l && s.Run.Release == release);
    }

    /// <summary>A small MoE row with a launch entry that turns the overlap on.</summary>
    private static ModernScenario Small(int pp, int layers, int microbatches)
    {
        const int ep = 2, dp = 4;
        var arch = new ModernArchitecture("toy-moe", layers, 1024, 8, 8, 128, 2048, 512, 8, 2, 0, 0, 32000, false, null, 0, 0, 0, null, "test");
        var run = new ModernRun("toy", "test", "toy-moe", "toy-moe", ModernFramework.MegatronBridge, "26.04", "moe", "B200 (DGX-B200)", pp * dp, "BF16",
            TrainingPrecision.Bf16, 512, (long)dp * microbatches, 1, 1, pp, null, 1, ep, dp, "distributed optimizer", false, 100, null, 1000, 0);
        var hw = HardwareCatalog.Get("DGX-B200").WithGpus(run.Gpus);
        var model = new ModelSpec("toy-moe", layers, 1024, 8, 512, 8, 2, run.GlobalBatch, 512) { Vocabulary = 32000 }.Validated();
        var launch = new BridgeLaunch("toy-moe", "b200", "bf16", ["26.04"], "TOY", new LaunchLayout(1, pp, null, ep, 1, run.GlobalBatch), true, BridgeDispatcher.Alltoall,
            null, null, null, null, new LaunchSource("r", "p", new string('0', 40)));
        return new ModernScenario(run, arch, model, hw, (int)Math.Ceiling(layers / (double)pp), 1, 0, Launch: launch);
    }

    [Fact]
    public void With_one_stage_the_launched_slice_law_matches_the_full_dag_with_the_overlap()
    {
        // Oracle: the full DAG of the replica (all microbatches) with moeAllToAllOverlap "1f1b", on the same cost model.
        var s = Small(1, 4, 5);
        var law = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: false, asLaunched: true).Parts.Total;
        var plain = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: false).Parts.Total;
        var st = new StrategySpec(2, 1, 1, 1, Derivation.Corrected, s.Run.Microbatches)
        {
            Mode = WorkloadMode.Training, Schedule = PipelineSchedule.OneFOneB, RankOrder = "tp-ep-dp-pp", MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB,
        }.Validated();
        var full = st.BuildDag(s.Model with { Batch = 2L * s.Run.Microbatches }).CriticalPath(ModernPredictor.Datasheet.CostOf(s.Hardware)).TotalSeconds;
        Assert.True(Math.Abs(law / full - 1) < 0.02, $"launched slice law {law * 1e3:F3} ms vs full DAG with overlap {full * 1e3:F3} ms");
        Assert.True(law < plain, $"overlap {law * 1e3:F3} ms should hide some all-to-all of plain {plain * 1e3:F3} ms");
    }

    [Fact]
    public void With_pipeline_stages_the_overlap_takes_off_what_a_one_stage_slice_hides_per_microbatch()
    {
        // Oracle (independent computation): the two-stage plain prediction less (m + p - 1) x the per-microbatch time the
        // overlap hides in one-stage slices (the same layers per stage), extended to the stage's layers as the law does.
        var s = Small(2, 8, 8);   // two stages: the slice is the whole pipeline depth, no middle stages
        var p = ModernPredictor.Datasheet;
        var plain = p.Predict(s, s.Hardware, 1, false).Parts.Total;
        var launched = p.Predict(s, s.Hardware, 1, false, asLaunched: true).Parts.Total;
        double PerMb(int layers, MoeAllToAllOverlap o)
        {
            double T(int m) => ModernPredictor.SliceStrategy(s, 1, m, o).BuildDag(ModernPredictor.SliceModel(s, 1, layers, m))
                .CriticalPath(p.CostOf(s.Hardware)).TotalSeconds;
            return (T(ModernPredictor.SliceMicrobatches2) - T(ModernPredictor.SliceMicrobatches1)) / (ModernPredictor.SliceMicrobatches2 - ModernPredictor.SliceMicrobatches1);
        }
        double Hidden(int l) => PerMb(l, MoeAllToAllOverlap.None) - PerMb(l, MoeAllToAllOverlap.OneFOneB);
        var h1 = Hidden(1);
        var hidden = h1 + (s.LayersPerStage - 1) * (Hidden(2) - h1);
        var visits = s.Run.Microbatches + s.Run.PP - 1;
        Assert.True(hidden > 0, "the overlap must hide something on an EP 2 slice");
        Assert.Equal(plain - visits * hidden, launched, 1e-9 * plain);
    }

    [CalibrationDataFact]
    public void Rows_without_settings_that_change_pricing_keep_the_topology_step()
    {
        // Oracle: by construction of the rung: the launch step is the topology step itself (same object) unless the
        // row's launch turns the overlap on or names a non-NCCL dispatcher.
        var suite = ModernSuite.Run(RealData.Data);
        var bridge = suite.Rows.Where(r => r.Row.Run.Framework == ModernFramework.MegatronBridge).ToArray();
        Assert.Contains(bridge, r => r.Row.Scenario.Launch is not null);
        Assert.Contains(bridge, r => r.Row.Scenario.Launch is null);
        foreach (var r in suite.Rows)
        {
            var same = ReferenceEquals(r.Row.Steps[ModernRung.Launch].Step, r.Row.Steps[ModernRung.Topology].Step);
            Assert.Equal(!ModernSuite.ChangesPricing(r.Row.Scenario), same);
        }
        Assert.Contains(suite.Ablation, a => a.Name == "+ launch settings");
    }

    [Fact]
    public void Gpt_oss_mxfp8_launches_fuse_the_grouped_mlp_and_drop_the_clamp_passes()
    {
        // Oracle: scripts/performance/configs/gpt_oss/gpt_oss_workload_base_configs.py @ 07eea52: GB300, GB200 and B300
        // FP8_MX_V2 set cutedsl_fused_grouped_mlp=True; the BF16 configs do not. Under it the slice's routed experts
        // carry no clamp operations (the CuTe DSL kernels clamp inside); the BF16 rows keep them.
        var c = BridgeLaunchCatalog.Published;
        var oss = c.Launches.Where(l => l.Family == "GPT-OSS-120B").ToArray();
        Assert.Equal(["GPT_OSS_120B_PRETRAIN_CONFIG_B300_FP8_MX_V2", "GPT_OSS_120B_PRETRAIN_CONFIG_GB200_FP8_MX_V2", "GPT_OSS_120B_PRETRAIN_CONFIG_GB300_FP8_MX_V2"],
            oss.Where(l => l.CutedslFusedGroupedMlp).Select(l => l.Config).OrderBy(x => x, StringComparer.Ordinal).ToArray());
        Assert.All(oss.Where(l => l.Precision == "bf16"), l => Assert.False(l.CutedslFusedGroupedMlp));
        var mx = ScenarioOf("mbridge_26.08_GPT_OSS_120B_DGX-GB300_64g_MXFP8_tp1pp1ep16");
        var bf = ScenarioOf("mbridge_26.04.01_GPT_OSS_120B_DGX-GB300_64g_BF16_tp1pp1ep64");
        Assert.True(mx.LaunchFusedGroupedMlp);
        Assert.True(ModernSuite.ChangesPricing(mx));
        Assert.False(bf.LaunchFusedGroupedMlp);
        int Clamps(ModernScenario s, bool fused)
        {
            var dag = ModernPredictor.SliceStrategy(s, 1, 2, fusedGroupedMlp: fused).BuildDag(ModernPredictor.SliceModel(s, 1, 2, 2, s.Preset));
            return Enumerable.Range(0, dag.Count).Count(op => dag.Kind(op) == MoeNotebooks.Dag.OpKind.Elementwise && dag.Index(op) == MoeNotebooks.Dag.OpKindExtensions.ActivationClampRole);
        }
        Assert.Equal(0, Clamps(mx, fused: true));
        Assert.True(Clamps(mx, fused: false) > 0);
        Assert.True(Clamps(bf, fused: false) > 0);
    }
}
