using MoeNotebooks.Dag;
using Xunit;

namespace MoeNotebooks.Tests;

/// <summary>
/// The builder's price-class table (<see cref="PriceClassIndex"/>, open addressing). Oracle: an independent assignment
/// of ids in order of first use by <c>Dictionary&lt;PriceClass, int&gt;</c>, which the builder used before.
/// </summary>
public class PriceClassIndexTests
{
    [Fact]
    public void IdsAreFirstUseOrderAsADictionaryAssignsThem()
    {
        var random = new Random(15);
        // Few distinct values per field, so classes repeat often and collide in the table; enough of them to rehash
        // several times (the table starts at 64 slots).
        var pool = Enumerable.Range(0, 5_000).Select(_ => new PriceClass(
            (PriceKind)random.Next(3), (CollectivePattern)random.Next(4),
            new MatmulShape(random.Next(1, 9) * 1024L, random.Next(1, 5) * 512L, random.Next(1, 5) * 256L, random.Next(1, 3)),
            random.Next(4) * 1_000_000L, random.Next(-1, 6), (byte)random.Next(2), random.Next(3))).ToArray();
        var index = new PriceClassIndex();
        var oracle = new Dictionary<PriceClass, int>();
        foreach (var c in pool)
        {
            if (!oracle.TryGetValue(c, out var expected)) oracle[c] = expected = oracle.Count;
            Assert.Equal(expected, index.IdOf(c));
        }
        Assert.True(oracle.Count > 1_000, $"only {oracle.Count} distinct classes drawn: the table never rehashed past its first sizes");
        Assert.Equal(oracle.Count, index.Count);
        var table = index.ToArray();
        foreach (var (c, id) in oracle) Assert.Equal(c, table[id]);
        Assert.Throws<ArgumentOutOfRangeException>(() => index[index.Count]);
    }
}
