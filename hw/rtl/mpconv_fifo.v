// Synchronous first-word-fall-through FIFO that infers block RAM.
//
// The array has one synchronous write port and one registered, enabled read port, and
// no reset, which is the template yosys synth_xilinx and Vivado map to RAMB18/RAMB36.
// The RAM's output register doubles as the output stage, so the FIFO holds up to
// DEPTH + 1 entries and streams one entry per cycle in both directions.
`default_nettype none
module mpconv_fifo #(
    parameter WIDTH = 33,
    parameter DEPTH = 512          // power of two, >= 2
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
    function integer clog2;
        input integer n;
        integer r;
        begin
            r = 0;
            while ((1 << r) < n) r = r + 1;
            clog2 = r;
        end
    endfunction
    localparam AW = clog2(DEPTH);
    localparam integer DEPTH_I = DEPTH;
    localparam [AW:0] FULL = DEPTH_I[AW:0];

    reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [WIDTH-1:0] rdata;
    reg [AW-1:0]    wptr, rptr;
    reg [AW:0]      count;          // entries in the array (not counting rdata)
    reg             ovalid;

    wire wr = s_valid && s_ready;
    wire rd = (count != {(AW+1){1'b0}}) && (!ovalid || m_ready);
    assign s_ready = (count != FULL);
    assign m_valid = ovalid;
    assign m_data  = rdata;
    assign empty   = !ovalid && (count == {(AW+1){1'b0}});

    always @(posedge clk) begin
        if (wr) mem[wptr] <= s_data;
        if (rd) rdata <= mem[rptr];
    end

    always @(posedge clk) begin
        if (rst) begin
            wptr <= {AW{1'b0}};
            rptr <= {AW{1'b0}};
            count <= {(AW+1){1'b0}};
            ovalid <= 1'b0;
        end else begin
            if (wr) wptr <= wptr + 1'b1;
            if (rd) rptr <= rptr + 1'b1;
            count <= count + {{AW{1'b0}}, wr} - {{AW{1'b0}}, rd};
            if (rd) ovalid <= 1'b1;
            else if (m_ready) ovalid <= 1'b0;
        end
    end
endmodule
`default_nettype wire
