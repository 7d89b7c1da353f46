using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

/// <summary>The hardware description's host link (GPU to host memory, per GPU per direction): what CPU offloading moves over.</summary>
public class HostLinkTests
{
    private const string Gpu = """
        "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 1e15 }, "hbmBytesPerSecond": 1e12, "hbmCapacityBytes": 1e11 },
        "intraNode": { "bytesPerSecond": 400e9, "latencySeconds": 5e-6 }, "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 1e-5 }
        """;

    private static HardwareSpec Read(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return HardwareSpec.Read(new JsonObjectReader(doc.RootElement, "hardware", null));
    }

    [Fact]
    public void The_host_link_reads_overrides_and_defaults_to_none()
    {
        // Round trip: the inline field's values come back; a preset without it has none; a preset override replaces it
        // and a preset keeps its own when not overridden.
        var h = Read($$"""{ "name": "x", "gpus": 8, "gpusPerNode": 8, {{Gpu}}, "hostLink": { "bytesPerSecond": 64e9, "latencySeconds": 2e-6 } }""");
        Assert.Equal(new LinkSpec(64e9, 2e-6), h.HostLink);
        Assert.Null(Read($$"""{ "name": "x", "gpus": 8, "gpusPerNode": 8, {{Gpu}} }""").HostLink);
        Assert.Null(HardwareCatalog.Get("H100-SXM").HostLink);
        Assert.Equal(new LinkSpec(10e9, 1e-6), Read("""{ "preset": "GB200-NVL72", "gpus": 72, "hostLink": { "bytesPerSecond": 10e9, "latencySeconds": 1e-6 } }""").HostLink);
        Assert.Equal(HardwareCatalog.Get("GB200-NVL72").HostLink, Read("""{ "preset": "GB200-NVL72", "gpus": 144 }""").HostLink);
    }

    [Fact]
    public void The_grace_superchip_racks_share_900_gb_per_s_of_c2c_over_two_gpus_and_two_directions()
    {
        // Oracle (hand, from the GB200 NVL72 datasheet's NVLink-C2C 900 GB/s bidirectional per superchip of two GPUs):
        // 900 / 2 GPUs / 2 directions = 225 GB/s per GPU per direction; GB300 assumed the same.
        foreach (var rack in new[] { "GB200-NVL72", "GB300-NVL72" })
            Assert.Equal(900e9 / 2 / 2, HardwareCatalog.Get(rack).HostLink!.BytesPerSecond);
    }

    [Theory]
    [InlineData("{ \"bytesPerSecond\": -1, \"latencySeconds\": 0 }", "hardware.hostLink.bytesPerSecond", "-1")]
    [InlineData("{ \"bytesPerSecond\": 64e9, \"latencySeconds\": -1 }", "hardware.hostLink.latencySeconds", "-1")]
    [InlineData("{ \"bytesPerSecond\": 64e9 }", "hardware.hostLink.latencySeconds", "missing")]
    public void Bad_host_link_values_are_rejected_naming_field_and_value(string link, string path, string value)
    {
        var ex = Assert.Throws<ConfigException>(() => Read($$"""{ "name": "x", "gpus": 8, "gpusPerNode": 8, {{Gpu}}, "hostLink": {{link}} }"""));
        Assert.Contains(path, ex.Message);
        Assert.Contains(value, ex.Message);
    }
}
