namespace MoeNotebooks; public static class Placeholder { }
