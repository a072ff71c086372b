// Skid buffer (register slice) for an AXI4-Stream output: every output is a flip-flop and
// the upstream ready is a flip-flop, so nothing outside reaches the pipeline's enables
// through logic. Two entries: the output register and one spare that catches the beat
// accepted in the cycle the downstream ready dropped. One beat per cycle when the
// downstream is always ready; one cycle of latency.
`default_nettype none
module mpconv_skid #(
    parameter WIDTH = 33
) (
    input  wire             clk,
    input  wire             rst,    // synchronous, active high
    input  wire [WIDTH-1:0] s_data,
    input  wire             s_valid,
    output wire             s_ready,
    output wire [WIDTH-1:0] m_data,
    output wire             m_valid,
    input  wire             m_ready,
    output wire             empty
);
    reg [WIDTH-1:0] o_data, sk_data;
    reg             o_valid, sk_valid;

    assign s_ready = !sk_valid;
    assign m_valid = o_valid;
    assign m_data  = o_data;
    assign empty   = !o_valid && !sk_valid;

    wire o_free = !o_valid || m_ready;   // the output register may load this cycle

    always @(posedge clk) begin
        if (o_free) o_data <= sk_valid ? sk_data : s_data;
        if (!o_free && s_valid && !sk_valid) sk_data <= s_data;
    end

    always @(posedge clk) begin
        if (rst) begin
            o_valid <= 1'b0;
            sk_valid <= 1'b0;
        end else if (o_free) begin
            o_valid <= sk_valid || s_valid;
            sk_valid <= 1'b0;
        end else if (s_valid && !sk_valid) begin
            sk_valid <= 1'b1;
        end
    end
endmodule
`default_nettype wire
