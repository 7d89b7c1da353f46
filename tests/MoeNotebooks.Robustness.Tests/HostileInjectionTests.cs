using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Class 4 (issue 17): control characters and markup from names, values, keys and arguments. Terminal output shows
/// them visibly (\x1b, \u202e), JSON output stays valid JSON carrying the same text, error lines stay one line of
/// readable length, and a chart title inside a plotly &lt;script&gt; cannot close the script.
/// Oracle: no raw control character in any output, JSON round-trips the name, one error line, script count intact.
/// </summary>
public class HostileInjectionTests
{
    /// <summary>Escapes as JSON writes them; the names they are known by.</summary>
    public static readonly (string Json, string Name)[] Payloads =
    [
        ("\\u001b[2J\\u001b[H", "esc-clear"), ("\\u0007", "bel"), ("\\u0000", "nul"), ("\\r", "cr"), ("\\n", "lf"),
        ("\\r\\nerror: forged", "forged-line"), ("\\u202e", "rlo"), ("\\u2028", "line-sep"), ("\\u0085", "nel"),
        ("\\u007f", "del"), ("\\u009b31m", "csi"), ("\\u001b]0;pwned\\u0007", "osc-title"),
    ];

    /// <summary>Where a user string enters: each location gets every payload.</summary>
    public static readonly string[] Locations = ["name", "description", "model.name", "hardware.name", "hardware.gpu.name", "hardware.gpu.source"];

    public static TheoryData<string, string> EvaluateCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var location in Locations) foreach (var (_, name) in Payloads) data.Add(location, name);
        return data;
    }

    private static string Payload(string name) => Payloads.Single(p => p.Name == name).Json;

    [Theory]
    [MemberData(nameof(EvaluateCases))]
    public void Control_characters_in_a_name_never_reach_the_terminal_raw(string location, string payload)
    {
        var json = Hostile.Set(location, $"\"x{Payload(payload)}y\"");
        var file = Hostile.Temp($"inject-{location}-{payload}.json", json);
        var table = Hostile.Cli("evaluate", file);
        Assert.True(table.Code == 0, table.Err);
        Assert.False(Hostile.HasRawControl(table.Out.Replace("\n", "", StringComparison.Ordinal)), $"raw control character in table output");
        Assert.Equal("", table.Err);
        var formula = Hostile.Cli("formula", file);
        Assert.Equal(0, formula.Code);
        Assert.False(Hostile.HasRawControl(formula.Out.Replace("\n", "", StringComparison.Ordinal)));
        var asJson = Hostile.Cli("evaluate", file, "--format", "json");
        Assert.Equal(0, asJson.Code);
        Assert.False(Hostile.HasRawControl(asJson.Out.Replace("\n", "", StringComparison.Ordinal)));
        using var doc = JsonDocument.Parse(asJson.Out);
        if (location == "name")
        {
            // The JSON carries the name itself (escaped for JSON, not mangled).
            var expected = JsonDocument.Parse($"\"x{Payload(payload)}y\"").RootElement.GetString();
            Assert.Equal(expected, doc.RootElement.GetProperty("scenario").GetString());
        }
    }

    public static TheoryData<string> PayloadNames()
    {
        var data = new TheoryData<string>();
        foreach (var (_, name) in Payloads) data.Add(name);
        return data;
    }

    [Theory]
    [MemberData(nameof(PayloadNames))]
    public void Unknown_key_with_control_characters_gives_one_visible_line(string payload)
    {
        var json = Hostile.Base.Replace("\"layers\": 2,", $"\"layers\": 2, \"lay{Payload(payload)}ers2\": 1,", StringComparison.Ordinal);
        var file = Hostile.Temp($"inject-key-{payload}.json", json);
        Hostile.Refused(Hostile.Cli("evaluate", file), "not a known key");
    }

    [Theory]
    [MemberData(nameof(PayloadNames))]
    public void Bad_string_value_with_control_characters_gives_one_visible_line(string payload)
    {
        foreach (var (path, named) in new[] { ("model.dtype", "dtype"), ("strategy.schedule", "schedule"), ("strategy.rankOrder", "rankOrder"), ("hardware.preset", "preset") })
        {
            var json = path == "hardware.preset"
                ? Hostile.Set("hardware", $$"""{ "preset": "H1{{Payload(payload)}}00" }""")
                : Hostile.Set(path, $"\"b{Payload(payload)}ad\"");
            var file = Hostile.Temp($"inject-value-{named}-{payload}.json", json);
            Hostile.Refused(Hostile.Cli("evaluate", file), named);
        }
    }

    [Theory]
    [MemberData(nameof(PayloadNames))]
    public void Argument_with_control_characters_gives_one_visible_line(string payload)
    {
        var raw = JsonDocument.Parse($"\"a{Payload(payload)}b\"").RootElement.GetString()!;
        Hostile.Refused(Hostile.Cli("evaluate", "data/scenarios/ep16.json".Repo(), "--format", raw), "--format");
        Hostile.Refused(Hostile.Cli("evaluate", raw), "scenario");
        Hostile.Refused(Hostile.Cli("evaluate", "data/scenarios/ep16.json".Repo(), "--" + raw, "1"), "unknown option");
        Hostile.Refused(Hostile.Cli(raw), "unknown verb");
    }

    [Theory]
    [InlineData(1_000)]
    [InlineData(100_000)]
    [InlineData(1_000_000)]
    public void Very_long_key_or_value_is_truncated_in_the_error_line(int length)
    {
        var longKey = new string('k', length);
        var json = Hostile.Base.Replace("\"layers\": 2,", $"\"layers\": 2, \"{longKey}\": 1,", StringComparison.Ordinal);
        var file = Hostile.Temp($"long-key-{length}.json", json);
        var r = Hostile.Cli("evaluate", file);
        Hostile.Refused(r, "characters");
        Assert.True(r.Err.Length < 2500, $"error line of {r.Err.Length} characters");
        var value = Hostile.Set("model.dtype", $"\"{new string('v', length)}\"");
        var r2 = Hostile.Cli("evaluate", Hostile.Temp($"long-value-{length}.json", value));
        Hostile.Refused(r2, "dtype");
        Assert.True(r2.Err.Length < 2500);
        Hostile.Refused(Hostile.Cli("evaluate", "data/scenarios/ep16.json".Repo(), "--format", new string('f', length)), "--format");
    }

    [Theory]
    [InlineData("\"\\ud800\"", "name")]
    [InlineData("\"a\\udfffb\"", "name")]
    [InlineData("\"\\ud800\\ud800\"", "description")]
    [InlineData("\"\\udc00\\ud800\"", "model.name")]
    public void Lone_surrogate_is_refused_with_a_clear_line(string value, string path)
    {
        var file = Hostile.Temp($"surrogate-{path}-{value.Length}.json", Hostile.Set(path, value));
        Hostile.Refused(Hostile.Cli("evaluate", file), "surrogate");
        Hostile.Refused(Hostile.Process(["evaluate", file]), "surrogate");
    }

    [Fact]
    public void Lone_surrogate_in_a_key_is_refused()
    {
        var json = Hostile.Base.Replace("\"layers\": 2,", "\"layers\": 2, \"\\ud800\": 1,", StringComparison.Ordinal);
        Hostile.Refused(Hostile.Cli("evaluate", Hostile.Temp("surrogate-key.json", json)), "surrogate");
    }

    /// <summary>Control characters through the whole process (real console encoding): table, JSON and error line.</summary>
    [Theory]
    [InlineData("esc-clear")]
    [InlineData("rlo")]
    [InlineData("forged-line")]
    [InlineData("nel")]
    public void Through_the_process_output_stays_visible(string payload)
    {
        var file = Hostile.Temp($"inject-process-{payload}.json", Hostile.Set("name", $"\"x{Payload(payload)}y\""));
        var table = Hostile.Process(["evaluate", file]);
        Assert.Equal(0, table.Code);
        Assert.False(Hostile.HasRawControl(table.Out.Replace("\n", "", StringComparison.Ordinal)));
        var json = Hostile.Process(["evaluate", file, "--format", "json"]);
        Assert.Equal(0, json.Code);
        using var doc = JsonDocument.Parse(json.Out);
        var bad = Hostile.Temp($"inject-process-bad-{payload}.json", Hostile.Set("model.dtype", $"\"x{Payload(payload)}y\""));
        Hostile.Refused(Hostile.Process(["evaluate", bad]), "dtype");
    }
}

/// <summary>
/// Class 4, HTML: a user string in a chart title or label is written inside plotly's &lt;script&gt; as JSON. It must not
/// close the script or open a new one. Oracle: the chart HTML has exactly as many &lt;/script&gt; as &lt;script openings,
/// and the payload's markup appears only \u003c-escaped.
/// </summary>
public class HostileChartTests
{
    public static readonly string[] Payloads =
    [
        "</script><script>alert(1)</script>", "</SCRIPT ><img src=x onerror=alert(1)>", "<!--<script>", "]]></script>",
        "\u2028</script>\u2029", "</scr\u0000ipt>",
    ];

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var chart in new[] { "line", "bars", "heatmap", "gantt" })
            for (var i = 0; i < Payloads.Length; i++) data.Add(chart, i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Chart_title_and_labels_cannot_close_the_script(string kind, string index)
    {
        var p = Payloads[int.Parse(index, System.Globalization.CultureInfo.InvariantCulture)];
        Plotly.NET.GenericChart chart = kind switch
        {
            "line" => MoeNotebooks.Interactive.Charts.Line(p, p, p, [(p, 1.0, 2.0), (p, 2.0, 3.0)]),
            "bars" => MoeNotebooks.Interactive.Charts.StackedBars(p, p, p, [(p, p, 1.0)]),
            "heatmap" => MoeNotebooks.Interactive.Charts.Heatmap(p, p, p, p, [p], [p], new double[,] { { 1.0 } }),
            _ => MoeNotebooks.Interactive.Charts.Gantt(p, [(p, p, p, 0.0, 1.0)]),
        };
        var html = Plotly.NET.GenericChart.toChartHTML(chart);
        var opens = System.Text.RegularExpressions.Regex.Matches(html, "<script", System.Text.RegularExpressions.RegexOptions.IgnoreCase).Count;
        var closes = System.Text.RegularExpressions.Regex.Matches(html, "</script", System.Text.RegularExpressions.RegexOptions.IgnoreCase).Count;
        Assert.Equal(opens, closes);
        Assert.DoesNotContain("alert(1)</script>", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<img src=x", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<!--<script>", html, StringComparison.Ordinal);
    }
}
