using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Issue 12: DeepEP's normal kernels take SMs from compute while they run (<c>costModel.deepEpSms</c>).</summary>
public class DeepEpSmTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM");

    /// <summary>
    /// GPUs 0 and 1: an all-to-all of 10 s issued first; then on GPU 0 a compute operation of <paramref name="work"/> s
    /// that waits for an operation of <paramref name="computeDelay"/> s on GPU 2 (outside the all-to-all).
    /// </summary>
    private static (OperatorDag Dag, double[] Durations) AllToAllBesideCompute(double work, double computeDelay = 0)
    {
        var b = new DagBuilder(3);
        b.AddCommunication(OpKind.AllToAllDispatch, b.Group([0, 1]), 1 << 20, 0, []);
        var before = b.AddElementwise(2, 8, 0, []);
        var gemm = b.AddMatmul(OpKind.ExpertUp, 0, new MatmulShape(128, 128, 128), 0, [before]);
        return (b.Build(), [10, computeDelay, work]);
    }


    [Theory]
    [InlineData(6, 0, 8)]        // 6 s of work at 3/4 speed inside the 10 s all-to-all: 8 s
    [InlineData(9, 0, 11.5)]     // 7.5 s of work done by t = 10, the remaining 1.5 s at full speed
    [InlineData(4, 8, 12.5)]     // starts at 8: 1.5 s of work by t = 10, 2.5 s more at full speed
    [InlineData(3, 12, 15)]      // starts after the all-to-all: untouched
    public void Compute_beside_a_deep_ep_all_to_all_runs_at_the_sms_left(double work, double delay, double finish)
    {
        // Oracle (hand): with share s = 25 of 100 SMs the compute operation progresses at 1 - s = 0.75 while the
        // all-to-all [0, 10] runs and at 1 outside it.
        var (dag, d) = AllToAllBesideCompute(work, delay);
        var cost = new CostModel("shares", new RooflineCompute(H100.Gpu, EfficiencyTable.Ideal), new LinkCommunication(H100.WithGpus(3))) { AllToAllSmShare = 0.25 };
        var result = Scheduler.Schedule(dag, d, "hand", null, cost.ComputeShares(dag));
        Assert.Equal(finish, result.FinishSeconds(2), 1e-12);
        Assert.Equal(Math.Max(10, finish), result.TotalSeconds, 1e-12);
        // Without SM-taking communication the same DAG runs the compute at full speed.
        Assert.Equal(delay + work, Scheduler.Schedule(dag, d).FinishSeconds(2), 1e-12);
    }

    private static Scenario Moe(string costModel, string overlap = "none") => Scenario.Parse($$"""
        { "model": { "layers": 4, "hiddenSize": 1024, "attentionHeads": 8, "ffnHiddenSize": 2048, "experts": 16, "topK": 4,
                     "batch": 32, "sequenceLength": 1024, "vocabulary": 4096 },
          "hardware": { "preset": "DGX-H100", "gpus": 8 },
          "strategy": { "ep": 8, "tp": 1, "pp": 1, "dp": 1, "mode": "training", "microbatches": 2, "moeAllToAllOverlap": "{{overlap}}" },
          "costModel": {{costModel}} }
        """);

    [Fact]
    public void The_cost_model_takes_deep_ep_sms_from_the_gpus_sms_for_the_normal_kernels_only()
    {
        // Oracle: the data: 20 SMs (Megatron's --moe-deepep-num-sms default) of an H100 SXM's 132 (its whitepaper);
        // NCCL and DeepEP's low-latency kernels take none.
        var h100 = H100.WithGpus(8);
        Assert.Equal(20.0 / 132, new CostModelSpec(CostModelKind.RooflineIdeal) { AllToAll = AllToAllImplementation.DeepEpNormal }.Create(h100).AllToAllSmShare, 15);
        Assert.Equal(24.0 / 132, new CostModelSpec(CostModelKind.RooflineIdeal) { AllToAll = AllToAllImplementation.DeepEpNormal, DeepEpSms = 24 }.Create(h100).AllToAllSmShare, 15);
        Assert.Equal(0, new CostModelSpec(CostModelKind.RooflineIdeal) { AllToAll = AllToAllImplementation.DeepEpLowLatency }.Create(h100).AllToAllSmShare);
        Assert.Equal(0, CostModelSpec.Ideal.Create(h100).AllToAllSmShare);
        Assert.Null(CostModelSpec.Ideal.Create(h100).ComputeShares(Moe("\"roofline-ideal\"").BuildDag()));
    }

    [Theory]
    [InlineData("{ \"kind\": \"roofline-ideal\", \"alltoall\": \"nccl\", \"deepEpSms\": 20 }", "costModel.deepEpSms", "20")]
    [InlineData("{ \"kind\": \"roofline-ideal\", \"alltoall\": \"deep-ep-normal\", \"deepEpSms\": 0 }", "costModel.deepEpSms", "0")]
    [InlineData("{ \"kind\": \"roofline-ideal\", \"alltoall\": \"deep-ep-normal\", \"deepEpSms\": 132 }", "costModel.deepEpSms", "132")]
    public void Bad_deep_ep_sms_are_rejected_naming_the_field(string costModel, string field, string value)
    {
        // Oracle: the bar for bad input: one ConfigException naming the field and the value (SMs must be left for compute).
        var e = Assert.Throws<ConfigException>(() => Moe(costModel).Evaluate());
        Assert.Equal(field, e.Field);
        Assert.Equal(value, e.Value);
    }

    [Fact]
    public void A_deep_ep_strategy_needs_a_deep_ep_cost_model()
    {
        // Oracle: Megatron's --moe-enable-deepep runs DeepEP's kernels; pricing them as NCCL would silently ignore the flag.
        var e = Assert.Throws<ConfigException>(() => Moe("\"roofline-ideal\"", "deep-ep"));
        Assert.Equal("costModel.alltoall", e.Field);
        Assert.Equal("\"nccl\"", e.Value);
        Assert.True(Moe("{ \"kind\": \"roofline-ideal\", \"alltoall\": \"deep-ep-normal\" }", "deep-ep").Evaluate().TotalSeconds > 0);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("1f1b")]
    public void Taking_more_sms_never_makes_a_step_faster_and_all_to_alls_are_issued_before_the_compute_they_slow(string overlap)
    {
        // Oracle (monotonicity): the same DAG and durations with 1, 20 and 60 SMs taken: the step never gets faster,
        // and with 20 SMs it is slower than with none whenever an all-to-all runs beside compute. The scheduler slows
        // only compute issued after an all-to-all (a lower id); the check by brute force over the schedule: no
        // all-to-all starts strictly inside an earlier-issued compute operation on one of its GPUs.
        double Total(int sms) => Moe($$"""{ "kind": "roofline-ideal", "alltoall": "deep-ep-normal", "deepEpSms": {{sms}} }""", overlap).Evaluate(DagFolding.None).TotalSeconds;
        var normal = Moe("""{ "kind": "roofline-ideal", "alltoall": "deep-ep-normal" }""", overlap);
        double t1 = Total(1), t20 = Total(20), t60 = Total(60);
        Assert.True(t1 <= t20 && t20 <= t60, $"{t1} {t20} {t60}");
        var ev = normal.Evaluate(DagFolding.None);
        var dag = ev.Dag;
        var r = ev.Result;
        var unshared = Scheduler.Schedule(dag, ev.Cost.Price(dag), "no shares", ev.Cost.Footprints(dag)).TotalSeconds;
        var pr = ev.Cost.Price(dag);
        var stretched = Enumerable.Range(0, dag.Count).Count(op => dag.Category(op) != OpCategory.Communication && r.FinishSeconds(op) - r.StartSeconds(op) > pr[op] * (1 + 1e-9));
        // A plain run has no compute beside its all-to-alls (the experts wait for the dispatch): nothing is slowed.
        // Under the EP overlap the other microbatch's compute runs beside them and is slowed.
        if (overlap == "none") { Assert.Equal(0, stretched); Assert.Equal(unshared, r.TotalSeconds); }
        else { Assert.True(stretched > 0); Assert.True(r.TotalSeconds > unshared, $"{r.TotalSeconds} vs {unshared}"); }
        for (var g = 0; g < dag.GpuCount; g++)
        {
            var compute = Enumerable.Range(0, dag.Count).Where(op => dag.Category(op) != OpCategory.Communication && dag.Gpu(op) == g).ToArray();
            foreach (var op in Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op).Pattern() == CollectivePattern.AllToAll && dag.Streams(op).ToArray().Contains(g)))
                Assert.DoesNotContain(compute, c => c < op && r.StartSeconds(c) < r.StartSeconds(op) - 1e-15 && r.StartSeconds(op) < r.FinishSeconds(c) - 1e-15);
        }
    }
}
