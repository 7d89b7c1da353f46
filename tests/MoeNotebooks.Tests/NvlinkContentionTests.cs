using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Tests;

/// <summary>
/// NVLink ports as contended links (<c>costModel.nvlinkContention</c>, <see cref="LinkCommunication.NvlinkPorts"/>).
/// Oracles: hand schedules on the DGX-H100 preset (NVLink 450 GB/s per GPU, latency 5 us): an operation issued while
/// committed work occupies one of its ports finishes after that work plus its own (the link's work conserved, as the
/// NIC contention is tested in <see cref="TopologyCommunicationTests"/>).
/// </summary>
public class NvlinkContentionTests
{
    private static HardwareSpec Dgx(int nodes) => HardwareCatalog.Get("DGX-H100").WithGpus(8 * nodes);

    private static CostModel Cost(HardwareSpec hw, bool ports) =>
        new("t", new RooflineCompute(hw.Gpu, EfficiencyTable.Ideal), new LinkCommunication(hw) { NvlinkContention = ports });

    [Fact]
    public void A_send_inside_a_node_shares_the_port_with_a_collective_on_it()
    {
        // Hand: a 1 GB TP all-reduce over GPUs 0-7 and a 1 GB pipeline send 0 -> 1 issued together. With ports the send
        // (issued second) uses GPU 0's send side, which the all-reduce occupies: it finishes at AR + send. Without: send alone.
        var hw = Dgx(1);
        var b = new DagBuilder(8);
        b.AddCommunication(OpKind.AttentionAllReduce, b.Group([0, 1, 2, 3, 4, 5, 6, 7]), 1_000_000_000, 0, []);
        b.AddSend(0, 1, 1_000_000_000, []);
        var dag = b.Build();
        var on = Cost(hw, true);
        var (ar, send) = (on.Seconds(dag, 0), on.Seconds(dag, 1));
        Assert.Equal(5e-6 + 1e9 / 450e9, send, 1e-12);
        Assert.Equal(ar + send, dag.CriticalPath(on).TotalSeconds, 1e-12);
        Assert.Equal(ar + send, dag.TotalSeconds(on), 1e-12);
        Assert.Equal(Math.Max(ar, send), dag.CriticalPath(Cost(hw, false)).TotalSeconds, 1e-12);
    }

    [Fact]
    public void Sends_on_other_ports_or_opposite_sides_do_not_contend()
    {
        // Hand: sends 2 -> 3 and 3 -> 2 (each side of each port used once) and 4 -> 5 beside a 1 GB all-reduce over
        // {0, 1}: no shared port side, every send finishes at its own time; a send across nodes (0 -> 8) uses NICs, not
        // ports, and the all-reduce over {0, 1} does not touch the NICs.
        var hw = Dgx(2);
        var b = new DagBuilder(16);
        b.AddCommunication(OpKind.AttentionAllReduce, b.Group([0, 1]), 1_000_000_000, 0, []);
        b.AddSend(2, 3, 1_000_000_000, []);
        b.AddSend(3, 2, 1_000_000_000, []);
        b.AddSend(4, 5, 1_000_000_000, []);
        b.AddSend(0, 8, 1_000_000_000, []);
        var dag = b.Build();
        var on = Cost(hw, true);
        var r = dag.CriticalPath(on);
        for (var op = 0; op < dag.Count; op++) Assert.Equal(on.Seconds(dag, op), r.FinishSeconds(op) - r.StartSeconds(op), 1e-12);
    }

    [Fact]
    public void Two_sends_out_of_one_gpu_take_turns()
    {
        // Hand: two 1 GB sends from GPU 0 (to 1 and to 2) issued together share GPU 0's send side: 2 x send.
        var hw = Dgx(1);
        var b = new DagBuilder(8);
        b.AddSend(0, 1, 1_000_000_000, []);
        b.AddSend(0, 2, 1_000_000_000, []);
        var dag = b.Build();
        var on = Cost(hw, true);
        Assert.Equal(2 * on.Seconds(dag, 0), dag.CriticalPath(on).TotalSeconds, 1e-12);
    }

    [Fact]
    public void Ports_map_to_their_links_and_meshes_are_not_contended()
    {
        var link = new LinkCommunication(Dgx(2)) { NvlinkContention = true };
        List<int> e = [], i = [];
        link.NvlinkPorts(CollectivePattern.SendRecv, [3, 5], e, i);
        Assert.Equal([3], e);
        Assert.Equal([5], i);
        link.NvlinkPorts(CollectivePattern.SendRecv, [3, 11], e, i);
        Assert.Empty(e);
        // A collective over {0, 1, 8}: GPUs 0 and 1 share a node (their ports), 8 is alone in its node (NIC only).
        link.NvlinkPorts(CollectivePattern.AllReduce, [0, 1, 8], e, i);
        Assert.Equal([0, 1], e);
        Assert.Equal([0, 1], i);
        var mesh = new LinkCommunication(HardwareCatalog.Get("MI300X").WithGpus(8)) { NvlinkContention = true };
        Assert.False(mesh.ContendsNvlinkPorts);
        Assert.False(new LinkCommunication(Dgx(1)).ContendsNvlinkPorts);
    }

    [Fact]
    public void The_option_reads_defaults_off_and_is_refused_on_a_communication_fit()
    {
        var on = CostModelSpec.Read(System.Text.Json.JsonDocument.Parse("""{"kind": "roofline-ideal", "nvlinkContention": true}""").RootElement, "costModel", "t");
        Assert.True(on.NvlinkContention);
        Assert.True(((LinkCommunication)on.Create(Dgx(1)).Communication).ContendsNvlinkPorts);
        var off = CostModelSpec.Read(System.Text.Json.JsonDocument.Parse("""{"kind": "roofline-ideal"}""").RootElement, "costModel", "t");
        Assert.False(off.NvlinkContention);
        var bad = Assert.Throws<ConfigException>(() => CostModelSpec.Read(System.Text.Json.JsonDocument.Parse("""{"kind": "roofline-ideal", "nvlinkContention": "yes"}""").RootElement, "costModel", "t"));
        Assert.Contains("nvlinkContention", bad.Message);
        var fit = Assert.Throws<ConfigException>(() => CostModelSpec.Read(System.Text.Json.JsonDocument.Parse("""{"kind": "calibrated", "communication": "x.csv", "nvlinkContention": true}""").RootElement, "costModel", "t"));
        Assert.Contains("nvlinkContention", fit.Message);
    }

    [Theory]
    [InlineData("seed-ep16", 38.79)]
    [InlineData("seed-tp8-pp2", 26.92)]
    [InlineData("ep16", 5.97)]
    [InlineData("tp8-pp2", 20.41)]
    [InlineData("ep16-training", 71.88)]
    [InlineData("tp8-pp2-training", 34.21)]
    public void Founding_totals_do_not_move_with_ports_contended(string name, double total)
    {
        // The founding document's totals (COMMON: seed-ep16 38.79 s ... tp8-pp2-training 34.21 s): every pipeline send
        // of the founding layouts crosses nodes (one stage per node) and a GPU's collectives already queue on its
        // stream, so turning the ports on must leave them where they are.
        var s = Scenario.Load(TestPaths.Scenario(name));
        var on = s with { CostModel = s.CostModel with { NvlinkContention = true } };
        Assert.Equal(total, Math.Round(on.Evaluate().TotalSeconds, 2));
    }
}
