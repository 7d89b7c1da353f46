using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>How a framework executes the DAG: attention kernel, blocking communication, scatter/gather pipeline sends.</summary>
public class ExecutionModelTests
{
    private static readonly HardwareSpec H100 = TrainingAndScheduleTests.H100x8;
    private static readonly ModelSpec Dense = TrainingAndScheduleTests.Dense;

    private static IEnumerable<int> Ops(OperatorDag dag, Func<int, bool> where) => Enumerable.Range(0, dag.Count).Where(where);

    private static bool IsSoftmax(OperatorDag dag, int op) => dag.Kind(op) == OpKind.Elementwise && dag.Index(op) == OpKindExtensions.AttentionSoftmaxRole;

    [Fact]
    public void Materialized_scores_add_exactly_the_softmax_traffic_to_a_single_gpu_forward()
    {
        // Oracle: hand derivation. One GPU, one stream, no communication, so the total is the sum of durations and
        // the difference is the softmax passes alone: per layer E = 32 sequences x 8 heads x 512^2 scores, read and
        // written once in fp16 (4E bytes), at the roofline's HBM bandwidth.
        var st = new StrategySpec(1, 1, 1, 1);
        var cost = CostModel.RooflineIdeal(H100.WithGpus(1));
        var fused = st.BuildDag(Dense).CriticalPath(cost).TotalSeconds;
        var dag = (st with { AttentionKernel = AttentionKernel.Materialized }).BuildDag(Dense);
        var materialized = dag.CriticalPath(cost).TotalSeconds;
        const double scores = 32.0 * 8 * 512 * 512;
        var expected = 8 * 4 * scores / H100.Gpu.HbmBytesPerSecond;
        Assert.Equal(expected, materialized - fused, expected * 1e-9);
        Assert.Equal(8, Ops(dag, op => IsSoftmax(dag, op)).Count());
    }

    [Fact]
    public void Dropout_adds_a_read_a_write_and_a_mask_byte_per_score_in_training()
    {
        // Oracle: hand derivation for TP = 2, 4 microbatches of 8 sequences, 4 heads per rank: E = 8 x 4 x 512^2.
        // Forward (and recompute) 2Ee + 2Ee + E = 9E bytes, backward 3Ee + 2Ee + E = 11E bytes (e = 2).
        var st = new StrategySpec(1, 2, 1, 1, Microbatches: 4) { Mode = WorkloadMode.Training, Recompute = true, AttentionKernel = AttentionKernel.MaterializedDropout };
        var dag = st.BuildDag(Dense);
        const long e = 8L * 4 * 512 * 512;
        var softmax = Ops(dag, op => IsSoftmax(dag, op)).ToArray();
        Assert.Equal(8 * 2 * 4 * 3, softmax.Length);   // layers x ranks x microbatches x (forward, recompute, backward)
        Assert.All(softmax.Where(op => dag.Phase(op) is OpPhase.Forward or OpPhase.Recompute), op => Assert.Equal(9 * e, dag.Bytes(op)));
        Assert.All(softmax.Where(op => dag.Phase(op) == OpPhase.BackwardData), op => Assert.Equal(11 * e, dag.Bytes(op)));
        var fusedDag = (st with { AttentionKernel = AttentionKernel.Fused }).BuildDag(Dense);
        Assert.DoesNotContain(Enumerable.Range(0, fusedDag.Count), op => IsSoftmax(fusedDag, op));
    }

    [Fact]
    public void Materialized_scores_are_saved_for_the_backward_unless_recomputed()
    {
        // Oracle: Korthikanti et al. 2022 count 5 a s^2 b bytes per layer for fp16 scores with dropout (probabilities,
        // mask, dropout output) against the 4 bytes per token and head of flash attention's softmax statistics.
        var st = new StrategySpec(1, 2, 1, 1, Microbatches: 4) { Mode = WorkloadMode.Training };
        var hw = H100.WithGpus(2);
        var fused = MemoryModel.Estimate(Dense, st, hw).Stages[0].ActivationsBytes;
        var materialized = MemoryModel.Estimate(Dense, st with { AttentionKernel = AttentionKernel.MaterializedDropout }, hw).Stages[0].ActivationsBytes;
        const double tokens = 8 * 512, headsPerRank = 4;
        var perLayer = 5 * tokens * 512 * headsPerRank - 4 * tokens * headsPerRank;
        Assert.Equal(8 * perLayer, materialized - fused, 1e-6 * materialized);
        var recomputed = st with { Recompute = true };
        var difference = MemoryModel.Estimate(Dense, recomputed with { AttentionKernel = AttentionKernel.MaterializedDropout }, hw).Stages[0].ActivationsBytes
                         - MemoryModel.Estimate(Dense, recomputed, hw).Stages[0].ActivationsBytes;
        Assert.Equal(perLayer, difference, 1e-6 * materialized);   // only the layer being recomputed holds its scores
    }

    [Fact]
    public void A_blocking_send_keeps_its_sender_busy_until_the_transfer_is_done()
    {
        // Hand-built: GPU 0 computes A (2 s), sends its output to GPU 1 (1 s), then computes B (3 s); GPU 1 runs C (1.5 s)
        // on the data. Overlapped: B starts at 2, total max(2 + 3, 2 + 1 + 1.5) = 5. Blocking: B waits for the send,
        // total 2 + 1 + 3 = 6; C still starts when the data arrives, at 3.
        OperatorDag Build(bool overlap)
        {
            var b = new DagBuilder(2) { CommunicationOverlapsCompute = overlap };
            var a = b.AddMatmul(OpKind.QProjection, 0, new(1, 1, 1), 0, []);
            var send = b.AddSend(0, 1, 1, [a]);
            b.AddMatmul(OpKind.KProjection, 0, new(1, 1, 1), 0, [a]);
            b.AddMatmul(OpKind.QProjection, 1, new(1, 1, 1), 1, [send]);
            return b.Build();
        }
        double[] d = [2, 1, 3, 1.5];
        Assert.Equal(5, Scheduler.Schedule(Build(true), d).TotalSeconds);
        var blocking = Scheduler.Schedule(Build(false), d);
        Assert.Equal(6, blocking.TotalSeconds);
        Assert.Equal(3, blocking.StartSeconds(2));
        Assert.Equal(3, blocking.StartSeconds(3));
        Assert.Equal(0, blocking.Dag.Gpu(1));   // the send belongs to its sender
    }

    [Fact]
    public void A_send_with_no_direction_is_refused()
    {
        var b = new DagBuilder(2);
        var ex = Assert.Throws<DagException>(() => b.AddCommunication(OpKind.PipelineSend, b.Group([0, 1]), 1, -1, []));
        Assert.Contains("AddSend", ex.Message);
    }

    [Theory]
    [InlineData(PipelineSchedule.OneFOneB, 1)]
    [InlineData(PipelineSchedule.Interleaved, 2)]
    public void Blocking_communication_keeps_the_pipeline_law_with_sends_on_each_step(PipelineSchedule schedule, int v)
    {
        // Oracle: Narayanan et al., SC21: uniform stages take (m + (p - 1) / v)(t_f + t_b). With blocking sends a
        // stage's time per microbatch grows by at most its own sends (one forward, one backward per chunk), so the
        // total lies between the law without sends and the law with them; stages must still run concurrently
        // (a schedule that serialised them would take about p times longer).
        var st = new StrategySpec(1, 1, 4, 1, Microbatches: 8) { Mode = WorkloadMode.Training, Schedule = schedule, VirtualStages = v, OverlapCommunication = false };
        var hw = HardwareCatalog.Get("DGX-H100").WithGpus(4);
        var dag = st.BuildDag(Dense);
        var d = CostModel.RooflineIdeal(hw).Price(dag);
        double Busy(int gpu, Func<int, bool> which) => Ops(dag, op => dag.Gpu(op) == gpu && dag.Microbatch(op) == 0 && dag.Phase(op) != OpPhase.Update && which(op)).Sum(op => d[op]);
        var compute = Busy(1, op => dag.Category(op) != OpCategory.Communication);
        var sends = Busy(1, op => dag.Kind(op) == OpKind.PipelineSend);
        var optimizer = Ops(dag, op => dag.Phase(op) == OpPhase.Update && dag.Gpu(op) == 0).Sum(op => d[op]);
        var total = Scheduler.Schedule(dag, d).TotalSeconds - optimizer;
        Assert.InRange(total, (8 + 3.0 / v) * compute * 0.999, (8 + 3.0 / v) * (compute + sends) * 1.001 + 4 * sends);
    }

    [Fact]
    public void Scatter_gather_sends_one_slice_per_tensor_rank_and_gathers_it_on_the_next_stage()
    {
        // Oracle: SC21 §4.1: each of the TP ranks sends 1/TP of the activation [tokens, h] and the receiving stage
        // all-gathers the whole activation over its TP group; without it every rank sends all of it.
        var st = new StrategySpec(1, 2, 2, 1, Microbatches: 4) { Mode = WorkloadMode.Training };
        const long activation = 8L * 512 * 1024 * 2;
        var plain = st.BuildDag(Dense);
        var sg = (st with { ScatterGather = true }).BuildDag(Dense);
        var plainSends = Ops(plain, op => plain.Kind(op) == OpKind.PipelineSend).ToArray();
        var sgSends = Ops(sg, op => sg.Kind(op) == OpKind.PipelineSend).ToArray();
        Assert.Equal(4 * 2 * 2, plainSends.Length);                // microbatches x (forward, backward) x TP ranks
        Assert.All(plainSends, op => Assert.Equal(activation, plain.Bytes(op)));
        Assert.Equal(plainSends.Length, sgSends.Length);
        Assert.All(sgSends, op => Assert.Equal(activation / 2, sg.Bytes(op)));
        var gathers = Ops(sg, op => sg.Kind(op) == OpKind.PipelineAllGather).ToArray();
        Assert.Equal(4 * 2, gathers.Length);                       // one per crossing, over the 2 TP ranks
        Assert.All(gathers, op => { Assert.Equal(activation, sg.Bytes(op)); Assert.Equal(2, sg.Participants(op).Length); });
        Assert.Empty(Ops(plain, op => plain.Kind(op) == OpKind.PipelineAllGather));
        // On a cluster where stages sit on different nodes, slicing pays off: each NIC carries half as much.
        var cost = CostModel.RooflineIdeal(HardwareCatalog.Get("DGX-H100").WithGpus(4));
        Assert.True(cost.Price(sg)[sgSends[0]] < cost.Price(plain)[plainSends[0]]);
    }

    [Fact]
    public void Execution_options_read_from_json_and_show_in_the_strategy()
    {
        var json = """{ "tp": 2, "pp": 2, "attentionKernel": "materialized-dropout", "scatterGather": true, "overlap": false }""";
        using var doc = JsonObjectReader.Parse(json, "t");
        var st = StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", "t"));
        Assert.Equal(AttentionKernel.MaterializedDropout, st.AttentionKernel);
        Assert.True(st.ScatterGather);
        Assert.Contains("materialized-dropout attention", st.ToString());
        Assert.Contains("scatter-gather", st.ToString());
    }
}
