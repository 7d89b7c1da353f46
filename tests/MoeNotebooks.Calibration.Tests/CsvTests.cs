using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration.Tests;

public class CsvTests
{
    private const string Header = "gpu,dtype,m,n,k,time_us,context";

    [Fact]
    public void Reads_rows_with_quoted_commas_and_converts_microseconds()
    {
        // Oracle: the rows as written; "a, b" is one quoted field.
        var csv = Header + "\nH100-80GB,bf16,4096,8192,1024,123.5,\"model x, TP1\"\r\n\nH100-80GB,fp16,1,2,3,7,\n";
        var rows = MeasurementCsv.ReadGemm(new StringReader(csv), "t.csv");
        Assert.Equal(2, rows.Count);
        Assert.Equal(new GemmMeasurement("H100-80GB", "bf16", 4096, 8192, 1024, 123.5e-6, "model x, TP1", 2), rows[0]);
        Assert.Equal(4, rows[1].Line);
    }

    [Theory]
    [InlineData("H100,bf16,4096,8192,1024,-1,x", "line 2, column time_us", "\"-1\"")]
    [InlineData("H100,bf16,40.96,8192,1024,1,x", "line 2, column m", "\"40.96\"")]
    [InlineData("H100,bf16,4096,8192,1024,\"1,5\",x", "line 2, column time_us", "\"1,5\"")]
    [InlineData("H100,bf17,4096,8192,1024,1,x", "line 2, column dtype", "\"bf17\"")]
    [InlineData("H100,bf16,4096,8192,1024,NaN,x", "line 2, column time_us", "\"NaN\"")]
    [InlineData("H100,bf16,4096,8192,1024", "line 2", "5 fields")]
    [InlineData("H100,bf16,4096,8192,1024,1,\"open", "line 2", null)]
    public void Rejects_malformed_rows_naming_the_line(string row, string field, string? value)
    {
        var e = Assert.Throws<ConfigException>(() => MeasurementCsv.ReadGemm(new StringReader(Header + "\n" + row + "\n"), "t.csv"));
        Assert.Equal(field, e.Field);
        Assert.Equal(value, e.Value);
        Assert.StartsWith("t.csv: ", e.Message);
    }

    [Fact]
    public void Missing_columns_are_named()
    {
        var e = Assert.Throws<ConfigException>(() => MeasurementCsv.ReadGemm(new StringReader("m,n,k,time_us\n1,2,3,4\n"), "t.csv"));
        Assert.Contains("lacks column \"dtype\"", e.Message);
    }

    [Fact]
    public void Parses_identically_under_a_German_culture()
    {
        // Oracle: the same file read under the invariant culture. The German number format (decimal comma,
        // group dot) is cloned explicitly because this repository runs with InvariantGlobalization.
        var csv = Header + "\nH100,bf16,4096,8192,1024,1234.5,x\nH100,bf16,4096,8192,1024,1.5e3,y\n";
        var comm = "collective,num_gpus,num_nodes,msg_bytes,time_us\nall_reduce,8,1,1048576,34.25\n";
        var invariant = MeasurementCsv.ReadGemm(new StringReader(csv), "t.csv");
        var invariantComm = MeasurementCsv.ReadCollectives(new StringReader(comm), "c.csv");
        var german = (CultureInfo)CultureInfo.InvariantCulture.Clone();
        german.NumberFormat.NumberDecimalSeparator = ",";
        german.NumberFormat.NumberGroupSeparator = ".";
        var before = CultureInfo.CurrentCulture;
        try
        {
            CultureInfo.CurrentCulture = german;
            Assert.Equal(1.5, double.Parse("1,5", CultureInfo.CurrentCulture)); // the culture really is German-style
            Assert.Equal(invariant, MeasurementCsv.ReadGemm(new StringReader(csv), "t.csv"));
            Assert.Equal(invariantComm, MeasurementCsv.ReadCollectives(new StringReader(comm), "c.csv"));
        }
        finally { CultureInfo.CurrentCulture = before; }
        Assert.Equal(1234.5e-6, invariant[0].Seconds, 1e-15);
        Assert.Equal(1500e-6, invariant[1].Seconds, 1e-15);
    }
}

public class MeasureScriptFormatTests
{
    [Fact]
    public void Reads_the_header_and_quoting_that_tools_measure_gemm_py_writes()
    {
        // Oracle: a row as Python's csv.writer writes it for tools/measure_gemm.py (fields with commas quoted).
        var csv = "gpu,dtype,m,n,k,time_us,tflops,context,measurement,source\r\n"
            + "NVIDIA H200,bf16,4096,8192,8192,712.345,771.72,grid m=4096 n=8192 k=8192; min_us=700.100,\"torch.matmul bf16, torch 2.5.1, CUDA 12.4; median of 50 CUDA-event-timed iterations after 10 warm-up; warm L2\",tools/measure_gemm.py\r\n";
        var row = Assert.Single(MeasurementCsv.ReadGemm(new StringReader(csv), "h200.csv"));
        Assert.Equal(new GemmMeasurement("NVIDIA H200", "bf16", 4096, 8192, 8192, 712.345e-6, "grid m=4096 n=8192 k=8192; min_us=700.100", 2), row);
    }
}
